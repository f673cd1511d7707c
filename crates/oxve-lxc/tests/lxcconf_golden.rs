//! CT config → LXC config for a table of cases (`tests/golden/<case>.conf`
//! → `<case>.lxc`, and `<case>.v2.lxc` for a cgroup v2 host). Regenerate
//! with `UPDATE_GOLDEN=1` after a deliberate change, and read the diff.

use oxve_lxc::idmap::IdMap;
use oxve_lxc::lxcconf::{render, HostEnv};
use oxve_lxc::Ct;
use oxve_schema::ctconfig::CtConfig;
use std::path::{Path, PathBuf};

fn env(ct: &Ct, cgroup_v2: bool) -> HostEnv {
    let idmap = ct.unprivileged.then(|| {
        let raw = ct.raw_values("lxc.idmap");
        IdMap::from_raw(&raw).unwrap().unwrap_or_else(|| {
            IdMap::from_subid("root:100000:65536\n", "root:100000:65536\n").unwrap()
        })
    });
    HostEnv {
        rootfs: PathBuf::from(format!("/run/oxve/lxc/{}/rootfs", ct.vmid)),
        log_file: PathBuf::from(format!("/run/oxve/lxc/{}/lxc.log", ct.vmid)),
        hook: Some("/usr/bin/oxve __lxc-hook /".into()),
        cgroup_v2,
        memsw: true,
        seccomp: Some(PathBuf::from("/usr/share/lxc/config/common.seccomp")),
        apparmor: false,
        host_cpus: 4,
        idmap,
        quota_devices: Vec::new(),
    }
}

#[test]
fn lxc_configs_match_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for (n, input) in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .enumerate()
    {
        let (conf, warnings) =
            CtConfig::parse(&std::fs::read_to_string(input).unwrap(), true).unwrap();
        assert!(warnings.is_empty());
        let ct = Ct::from_section(100 + n as u32, &conf.main).unwrap();
        for (v2, ext) in [(false, "lxc"), (true, "v2.lxc")] {
            let got = render(&ct, &env(&ct, v2));
            let expected = input.with_extension(ext);
            if update {
                std::fs::write(&expected, &got).unwrap();
            }
            let want = std::fs::read_to_string(&expected).unwrap_or_else(|_| {
                panic!(
                    "{} is missing (UPDATE_GOLDEN=1 writes it)",
                    expected.display()
                )
            });
            assert_eq!(got, want, "{}", expected.display());
        }
        cases += 1;
    }
    assert_eq!(cases, 4);
}
