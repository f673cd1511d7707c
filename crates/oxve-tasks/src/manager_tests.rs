use super::*;
use crate::list::{TaskFilter, TaskInfo, TaskSource};

fn manager() -> (tempfile::TempDir, TaskManager) {
    let dir = tempfile::tempdir().unwrap();
    let m = TaskManager::new(dir.path().join("tasks"), "pve1".into()).unwrap();
    (dir, m)
}

fn last_line(m: &TaskManager, upid: &Upid) -> String {
    let (lines, total) = m.read_log(upid, 0, 0).unwrap();
    assert_eq!(lines.len() as u64, total);
    lines.last().unwrap().t.clone()
}

fn index_text(m: &TaskManager) -> String {
    std::fs::read_to_string(m.inner.dir.join("index")).unwrap_or_default()
}

#[tokio::test]
async fn endings_ok_error_warnings() {
    let (_d, m) = manager();
    let ok = m
        .spawn("qmstart", Some("100"), "root@pam", |ctx| async move {
            ctx.log("starting VM 100");
            Ok(())
        })
        .unwrap();
    let err = m
        .spawn("qmstart", Some("101"), "root@pam", |_| async move {
            Err("VM 101 not found\n".to_string())
        })
        .unwrap();
    let warn = m
        .spawn("vzdump", None, "root@pam", |ctx| async move {
            ctx.warn("disk is almost full");
            ctx.warn("skipped CT 200");
            Ok(())
        })
        .unwrap();
    assert_eq!(m.wait(&ok).await.unwrap(), "OK");
    assert_eq!(m.wait(&err).await.unwrap(), "VM 101 not found");
    assert_eq!(m.wait(&warn).await.unwrap(), "WARNINGS: 2");

    let (lines, total) = m.read_log(&ok, 0, 50).unwrap();
    assert_eq!(total, 2);
    assert_eq!(lines[0].t, "starting VM 100");
    assert_eq!(lines[1].t, "TASK OK");
    assert_eq!(last_line(&m, &err), "TASK ERROR: VM 101 not found");
    let (lines, _) = m.read_log(&warn, 0, 0).unwrap();
    assert_eq!(lines[0].t, "WARN: disk is almost full");
    assert_eq!(lines[2].t, "TASK WARNINGS: 2");

    let st = m.status(&err).unwrap();
    assert_eq!(st.status, "stopped");
    assert_eq!(st.exitstatus.as_deref(), Some("VM 101 not found"));
    // The log file is where upstream puts it.
    let path = m
        .inner
        .dir
        .join(format!("{:X}", ok.starttime & 0xF))
        .join(ok.to_string());
    assert!(path.is_file());
    // Archived, with upstream's index line format.
    let index = index_text(&m);
    assert!(index.contains(&format!("{err} ")), "{index}");
    assert!(index
        .lines()
        .any(|l| l.starts_with(&ok.to_string()) && l.ends_with(" OK")));
    let active = std::fs::read_to_string(m.inner.dir.join("active")).unwrap();
    assert_eq!(active, "");
}

#[tokio::test]
async fn running_task_status_and_active_file() {
    let (_d, m) = manager();
    let upid = m
        .spawn("qmigrate", Some("100"), "root@pam", |ctx| async move {
            ctx.cancelled().await;
            Err(crate::INTERRUPTED.to_string())
        })
        .unwrap();
    assert_eq!(upid.pid, std::process::id());
    let st = m.status(&upid).unwrap();
    assert_eq!((st.status, st.exitstatus), ("running", None));
    let active = std::fs::read_to_string(m.inner.dir.join("active")).unwrap();
    assert_eq!(active, format!("{upid} 0\n"));
    let running = m
        .list(&TaskFilter {
            source: TaskSource::Active,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].status.as_deref(), Some("RUNNING"));

    m.stop(&upid).unwrap();
    assert_eq!(m.wait(&upid).await.unwrap(), "received interrupt");
    assert_eq!(last_line(&m, &upid), "TASK ERROR: received interrupt");
    assert_eq!(m.status(&upid).unwrap().status, "stopped");
    m.stop(&upid).unwrap(); // stopping a finished task does nothing
}

#[tokio::test]
async fn stop_drops_a_worker_that_ignores_it() {
    let dir = tempfile::tempdir().unwrap();
    let me = ProcessId::current().unwrap();
    let m = TaskManager::with_identity(
        dir.path().to_path_buf(),
        "pve1".into(),
        me,
        Duration::from_millis(50),
    )
    .unwrap();
    let upid = m
        .spawn("stubborn", None, "root@pam", |_| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .unwrap();
    m.stop(&upid).unwrap();
    assert_eq!(m.wait(&upid).await.unwrap(), "received interrupt");
}

#[tokio::test]
async fn panicking_worker_fails_its_task() {
    let (_d, m) = manager();
    let upid = m
        .spawn("boom", None, "root@pam", |_| async move {
            panic!("kaboom");
        })
        .unwrap();
    assert_eq!(m.wait(&upid).await.unwrap(), "worker panicked: kaboom");
}

#[tokio::test]
async fn identical_tasks_get_distinct_upids() {
    let (_d, m) = manager();
    let mut upids = Vec::new();
    for _ in 0..3 {
        upids.push(
            m.spawn("vncproxy", Some("100"), "root@pam", |_| async { Ok(()) })
                .unwrap(),
        );
    }
    for u in &upids {
        m.wait(u).await.unwrap();
    }
    let distinct: HashSet<String> = upids.iter().map(|u| u.to_string()).collect();
    assert_eq!(distinct.len(), 3);
}

#[tokio::test]
async fn bad_fields_are_refused() {
    let (_d, m) = manager();
    let err = m
        .spawn("qm:start", None, "root@pam", |_| async { Ok(()) })
        .unwrap_err();
    assert!(matches!(err, TaskError::InvalidField { field: "type", .. }));
    assert!(m
        .spawn("qmstart", Some("1 0"), "root@pam", |_| async { Ok(()) })
        .is_err());
    let unknown: Upid = "UPID:pve1:00001234:0001A2B3:5F5E1000:qmstart:100:root@pam:"
        .parse()
        .unwrap();
    assert!(matches!(m.status(&unknown), Err(TaskError::NoSuchTask(_))));
    assert!(matches!(m.stop(&unknown), Err(TaskError::NoSuchTask(_))));
}

#[test]
fn spawn_needs_a_runtime() {
    let (_d, m) = manager();
    let err = m
        .spawn("qmstart", None, "root@pam", |_| async { Ok(()) })
        .unwrap_err();
    assert!(matches!(err, TaskError::NoRuntime));
}

#[tokio::test]
async fn list_filters_and_paging() {
    let (_d, m) = manager();
    type Spec = (
        &'static str,
        Option<&'static str>,
        &'static str,
        Result<(), &'static str>,
    );
    let specs: [Spec; 5] = [
        ("qmstart", Some("100"), "root@pam", Ok(())),
        ("qmstart", Some("101"), "alice@pve", Err("failed")),
        ("vzdump", Some("100"), "alice@pve!backup", Ok(())),
        ("qmstop", Some("100"), "bob@pve", Err("timeout")),
        ("aptupdate", None, "root@pam", Ok(())),
    ];
    let mut upids = Vec::new();
    for (ty, id, user, result) in specs {
        let result = result.map_err(String::from);
        let u = m
            .spawn(ty, id, user, move |_| async move { result })
            .unwrap();
        // Finish in order so the index order is known.
        m.wait(&u).await.unwrap();
        upids.push(u);
    }
    let list = |f: TaskFilter| m.list_with_total(&f).unwrap();
    let types = |tasks: &[TaskInfo]| {
        tasks
            .iter()
            .map(|t| t.worker_type.clone())
            .collect::<Vec<_>>()
    };

    let (all, total) = list(TaskFilter::default());
    assert_eq!(total, 5);
    assert_eq!(
        types(&all),
        ["aptupdate", "qmstop", "vzdump", "qmstart", "qmstart"],
        "most recently finished first"
    );
    assert_eq!(all[2].user, "alice@pve");
    assert_eq!(all[2].tokenid.as_deref(), Some("backup"));
    assert!(all.iter().all(|t| t.endtime.is_some()));

    let (page, total) = list(TaskFilter {
        start: 1,
        limit: 2,
        ..Default::default()
    });
    assert_eq!(
        (types(&page), total),
        (vec!["qmstop".into(), "vzdump".into()], 5)
    );

    let (t, _) = list(TaskFilter {
        typefilter: Some("qmstart".into()),
        ..Default::default()
    });
    assert_eq!(t.len(), 2);
    let (t, _) = list(TaskFilter {
        vmid: Some(100),
        ..Default::default()
    });
    assert_eq!(types(&t), ["qmstop", "vzdump", "qmstart"]);
    let (t, _) = list(TaskFilter {
        userfilter: Some("ALICE".into()),
        ..Default::default()
    });
    assert_eq!(t.len(), 2);
    let (t, _) = list(TaskFilter {
        errors: true,
        ..Default::default()
    });
    assert_eq!(types(&t), ["qmstop", "qmstart"]);
    let (t, _) = list(TaskFilter {
        statusfilter: Some("ok,warning".into()),
        ..Default::default()
    });
    assert_eq!(t.len(), 3);
    // A user sees their tokens' tasks; a token only its own.
    let (t, _) = list(TaskFilter {
        only_user: Some("alice@pve".into()),
        ..Default::default()
    });
    assert_eq!(t.len(), 2);
    let (t, _) = list(TaskFilter {
        only_user: Some("alice@pve!backup".into()),
        ..Default::default()
    });
    assert_eq!(types(&t), ["vzdump"]);
    let start = upids[0].starttime;
    let (t, _) = list(TaskFilter {
        since: Some(start + 10_000),
        ..Default::default()
    });
    assert!(t.is_empty());
    let (t, _) = list(TaskFilter {
        until: Some(start - 1),
        ..Default::default()
    });
    assert!(t.is_empty());
    let (t, _) = list(TaskFilter {
        source: TaskSource::Active,
        ..Default::default()
    });
    assert!(t.is_empty());

    let json = serde_json::to_value(&all[0]).unwrap();
    for field in [
        "upid",
        "node",
        "pid",
        "pstart",
        "starttime",
        "type",
        "id",
        "user",
        "endtime",
        "status",
    ] {
        assert!(json.get(field).is_some(), "{field} in {json}");
    }
}

#[test]
fn restart_finishes_tasks_of_a_dead_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("tasks");
    // The previous daemon: a pid no process can have (above pid_max).
    let dead = ProcessId {
        pid: 0x7FFF_FFF0,
        pstart: 4242,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upid = rt.block_on(async {
        let m = TaskManager::with_identity(tasks.clone(), "pve1".into(), dead, STOP_GRACE).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let upid = m
            .spawn("vzdump", Some("100"), "root@pam", |ctx| async move {
                ctx.log("INFO: starting backup of VM 100");
                let _ = tx.send(());
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
            .unwrap();
        rx.await.unwrap();
        upid
    });
    // The daemon dies with the task half done.
    drop(rt);
    let active = std::fs::read_to_string(tasks.join("active")).unwrap();
    assert_eq!(active, format!("{upid} 0\n"));

    let m = TaskManager::new(tasks.clone(), "pve1".into()).unwrap();
    let st = m.status(&upid).unwrap();
    assert_eq!(st.status, "stopped");
    assert_eq!(st.exitstatus.as_deref(), Some(UNEXPECTED_STATUS));
    let (lines, _) = m.read_log(&upid, 0, 0).unwrap();
    assert_eq!(lines[0].t, "INFO: starting backup of VM 100");
    assert!(lines[1].t.starts_with("daemon restarted"), "{}", lines[1].t);
    let archived = m.list(&TaskFilter::default()).unwrap();
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].upid, upid);
    assert_eq!(archived[0].status.as_deref(), Some(UNEXPECTED_STATUS));
    assert_eq!(std::fs::read_to_string(tasks.join("active")).unwrap(), "");

    // A second restart does not archive it again.
    let m = TaskManager::new(tasks, "pve1".into()).unwrap();
    assert_eq!(m.list(&TaskFilter::default()).unwrap().len(), 1);
}

#[test]
fn restart_archives_a_task_that_ended_before_the_crash() {
    let dir = tempfile::tempdir().unwrap();
    let upid: Upid = "UPID:pve1:7FFFFFF0:00001092:5F5E1000:qmstart:100:root@pam:"
        .parse()
        .unwrap();
    let log = files::log_path(dir.path(), &upid);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "started\nTASK OK\n").unwrap();
    std::fs::write(dir.path().join("active"), format!("{upid} 0\n")).unwrap();
    let m = TaskManager::new(dir.path().to_path_buf(), "pve1".into()).unwrap();
    let list = m.list(&TaskFilter::default()).unwrap();
    assert_eq!(list[0].status.as_deref(), Some("OK"));
    assert_eq!(last_line(&m, &upid), "TASK OK");
}

#[test]
fn manager_is_shareable() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<TaskManager>();
    assert_shareable::<TaskContext>();
}
