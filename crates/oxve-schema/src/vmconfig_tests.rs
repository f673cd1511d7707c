use super::*;

fn parse(text: &str, strict: bool) -> Result<(VmConfig, Vec<ConfigProblem>), ConfigProblem> {
    VmConfig::parse(100, text, strict)
}

#[test]
fn empty_file_is_an_empty_config() {
    let (c, w) = parse("", true).unwrap();
    assert!(w.is_empty());
    assert_eq!(c, VmConfig::default());
    assert_eq!(c.write(), "");
    let (c, _) = parse("\n  \n\t\n", true).unwrap();
    assert_eq!(c.write(), "");
}

#[test]
fn description_only() {
    let text = "#a%3A 100%25 ok\n#\n#zwei  \n";
    let (c, w) = parse(text, true).unwrap();
    assert!(w.is_empty());
    // Upstream trims trailing white space off the whole description.
    assert_eq!(c.main.description, "a: 100% ok\n\nzwei");
    assert_eq!(c.write(), "#a%3A 100%25 ok\n#\n#zwei\n");
    let (c, _) = parse("description: one%3A\ndescription: two\n", true).unwrap();
    assert_eq!(c.main.description, "one:two");
}

#[test]
fn pending_with_delete() {
    let text = "memory: 512\n\n[PENDING]\ndelete: !net0,cores;balloon\nmemory: 1024\n";
    let (mut c, w) = parse(text, true).unwrap();
    assert!(w.is_empty());
    assert_eq!(c.pending.get("delete"), Some("!net0,cores;balloon"));
    let deletes = c.pending_deletes();
    assert_eq!(deletes.get("net0"), Some(&true));
    assert_eq!(deletes.get("cores"), Some(&false));
    assert_eq!(deletes.len(), 3);
    assert_eq!(c.write(), text);
    c.add_pending_delete("sockets", true);
    c.remove_pending_delete("cores");
    assert_eq!(c.pending.get("delete"), Some("balloon,!net0,!sockets"));
    c.remove_pending_delete("net0");
    c.remove_pending_delete("balloon");
    c.remove_pending_delete("sockets");
    assert_eq!(c.pending.get("delete"), None);
    assert_eq!(c.write(), "memory: 512\n\n[PENDING]\nmemory: 1024\n");
}

#[test]
fn delete_outside_pending() {
    let err = parse("delete: net0\n", true).unwrap_err();
    assert_eq!(
        err.0,
        "vm 100 - property 'delete' is only allowed in [PENDING]"
    );
    let (c, w) = parse("cores: 2\ndelete: net0\n", false).unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(c.write(), "cores: 2\n");
}

#[test]
fn crlf_lines() {
    // Upstream splits on `\n` only; `\r` is trailing white space.
    let (c, w) = parse("cores: 2\r\nname: a\r\n", true).unwrap();
    assert!(w.is_empty());
    assert_eq!(c.write(), "cores: 2\nname: a\n");
}

#[test]
fn duplicate_keys_last_wins() {
    let (c, w) = parse("cores: 2\ncores: 4\n", true).unwrap();
    assert!(w.is_empty());
    assert_eq!(c.main.get("cores"), Some("4"));
}

#[test]
fn values_are_normalized_as_upstream() {
    let (c, _) = parse(
        "numa: on\ncores: 007\nostype: \"l26\"\nargs: \"-foo\"\ncpulimit: 1.5\n",
        true,
    )
    .unwrap();
    assert_eq!(c.main.get("numa"), Some("1"));
    assert_eq!(c.main.get("cores"), Some("7"));
    assert_eq!(c.main.get("ostype"), Some("l26"));
    assert_eq!(c.main.get("args"), Some("\"-foo\""));
    assert_eq!(c.main.get("cpulimit"), Some("1.5"));
    // `name` has a format, so its quotes stay (and fail the format).
    let err = parse("name: \"x\"\n", true).unwrap_err();
    assert!(
        err.0
            .starts_with("vm 100 - unable to parse value of 'name' - "),
        "{}",
        err.0
    );
}

#[test]
fn type_errors_use_upstream_text() {
    let err = parse("cores: two\n", true).unwrap_err();
    assert_eq!(
        err.0,
        "vm 100 - unable to parse value of 'cores' - type check ('integer') failed - got 'two'"
    );
    let err = parse("bogus: 1\n", true).unwrap_err();
    assert_eq!(
        err.0,
        "vm 100 - unable to parse value of 'bogus' - unknown setting 'bogus'"
    );
    let err = parse("net32: virtio\n", true).unwrap_err();
    assert_eq!(
        err.0,
        "vm 100 - unable to parse value of 'net32' - unknown setting 'net32'"
    );
    let err = parse("Cores: 1\n", true).unwrap_err();
    assert_eq!(err.0, "vm 100 - unable to parse config: Cores: 1");
}

#[test]
fn config_only_keys_are_accepted() {
    let text = "cores: 1\nlock: backup\nparent: s1\nunused3: local:100/vm-100-disk-1.raw\n\n\
                [s1]\ncores: 1\nrunningcpu: kvm64,+aes\nrunningmachine: pc-i440fx-9.0+pve0\n\
                snapstate: prepare\nsnaptime: 1700000000\nvmstate: local:100/vm-100-state-s1.raw\n";
    let (c, w) = parse(text, true).unwrap();
    assert!(w.is_empty());
    assert_eq!(c.snapshots["s1"].get("snapstate"), Some("prepare"));
    assert_eq!(c.write(), text);
    for s in std::iter::once(&c.main).chain(c.snapshots.values()) {
        validate_section(s).unwrap();
    }
}

#[test]
fn main_snapstate_is_dropped() {
    let (c, _) = parse("snapstate: delete\ncores: 1\n", true).unwrap();
    assert_eq!(c.write(), "cores: 1\n");
}

#[test]
fn cdrom_is_ide2() {
    let (c, _) = parse("cdrom: none\nscsi1: /mnt/file.raw\n", true).unwrap();
    assert_eq!(c.write(), "ide2: none\nscsi1: /mnt/file.raw\n");
}

#[test]
fn cloudinit_section_needs_a_cloudinit_drive() {
    let text = "cores: 1\n\n[special:cloudinit]\nname: x\n";
    let (c, _) = parse(text, true).unwrap();
    assert_eq!(c.special["cloudinit"].get("name"), Some("x"));
    assert_eq!(c.write(), "cores: 1\n");
    let text =
        "ide2: local:100/vm-100-cloudinit.qcow2,media=cdrom\n\n[special:cloudinit]\nname: x\n";
    let (c, _) = parse(text, true).unwrap();
    assert_eq!(c.cloudinit_drive(), Some("ide2"));
    assert_eq!(c.write(), text);
}

#[test]
fn fleecing_section_has_its_own_schema() {
    let err = parse("[special:fleecing]\ncores: 1\n", true).unwrap_err();
    assert_eq!(
        err.0,
        "vm 100 - unable to parse value of 'cores' - unknown setting 'cores'"
    );
}

#[test]
fn to_json_types_numbers() {
    let (c, _) = parse("#hi\ncores: 2\nnuma: 1\nname: a\n", true).unwrap();
    let j = Value::Object(c.main.to_json());
    assert_eq!(
        j,
        serde_json::json!({"cores": 2, "numa": 1, "name": "a", "description": "hi"})
    );
}

#[test]
fn validate_section_checks_ranges_and_enums() {
    let mut s = VmSection::default();
    s.props.insert("ostype".into(), "redhat".into());
    s.props.insert("cores".into(), "0".into());
    let errs = validate_section(&s).unwrap_err();
    assert!(errs.get("ostype").is_some());
    assert!(errs.get("cores").is_some());
}

#[test]
fn prepare_write_does_what_upstreams_writer_does() {
    let mut c = VmConfig::default();
    for (k, v) in [
        ("cdrom", "none,media=cdrom"),
        ("smp", "2"),
        ("cores", "4"),
        ("numa", "on"),
        ("scsi0", "local:100/vm-100-disk-1.raw,size=4G"),
        ("unused0", "local:100/vm-100-disk-1.raw"),
        ("unused1", "local:100/vm-100-disk-2.raw"),
        ("snapstate", "prepare"),
    ] {
        c.main.props.insert(k.into(), v.into());
    }
    c.add_pending_delete("numa", false);
    c.prepare_write().unwrap();
    assert_eq!(
        c.write(),
        "ide2: none,media=cdrom\nnuma: 1\nscsi0: local:100/vm-100-disk-1.raw,size=4G\n\
         sockets: 2\nunused1: local:100/vm-100-disk-2.raw\n\n[PENDING]\ndelete: numa\n"
    );
    c.main.props.insert("cores".into(), "x".into());
    assert_eq!(
        c.prepare_write().unwrap_err().0,
        "unable to parse value of 'cores' - type check ('integer') failed - got 'x'"
    );
    c.main.props.insert("cores".into(), "1".into());
    c.snapshots.insert("s".into(), VmSection::default());
    c.snapshots
        .get_mut("s")
        .unwrap()
        .props
        .insert("delete".into(), "x".into());
    assert!(c.prepare_write().is_err());
}
