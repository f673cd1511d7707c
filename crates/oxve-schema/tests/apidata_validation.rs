//! Checks the validators against upstream's real API schema
//! (`../shared/pve-api/apidata.json`): every format it names is known, every
//! pattern compiles, and a few real methods accept good and refuse bad input
//! with upstream's messages.

use oxve_schema::format::{check_format, is_known_format};
use oxve_schema::validate::validate_params;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// The apidata tree, or `None` (test skipped) when the shared folder is
/// absent outside CI. Under `CI` a missing file fails the test.
fn apidata() -> Option<Value> {
    let source = oxve_schema::gen::shared_dir().join("pve-api/apidata.json");
    let Ok(text) = std::fs::read_to_string(&source) else {
        assert!(
            std::env::var("CI").is_err(),
            "{} is missing; CI must have ../shared",
            source.display()
        );
        eprintln!("skipping: {} not found", source.display());
        return None;
    };
    Some(serde_json::from_str(&text).expect("apidata.json parses"))
}

fn find_method<'a>(nodes: &'a Value, path: &str, verb: &str) -> Option<&'a Value> {
    for node in nodes.as_array()? {
        if node.get("path").and_then(Value::as_str) == Some(path) {
            return node.get("info")?.get(verb)?.get("parameters");
        }
        if let Some(found) = node
            .get("children")
            .and_then(|c| find_method(c, path, verb))
        {
            return Some(found);
        }
    }
    None
}

/// Walks every parameter schema (with nested items, properties, oneOf and
/// property-string sub-schemas), calling `f` on each.
fn walk_schemas(nodes: &Value, f: &mut dyn FnMut(&Value)) {
    fn walk_schema(schema: &Value, f: &mut dyn FnMut(&Value)) {
        f(schema);
        if let Some(Value::Object(fmt)) = schema.get("format") {
            fmt.values().for_each(|s| walk_schema(s, f));
        }
        if let Some(Value::Object(props)) = schema.get("properties") {
            props.values().for_each(|s| walk_schema(s, f));
        }
        if let Some(items) = schema.get("items") {
            walk_schema(items, f);
        }
        if let Some(Value::Array(alts)) = schema.get("oneOf") {
            alts.iter().for_each(|s| walk_schema(s, f));
        }
    }
    for node in nodes.as_array().into_iter().flatten() {
        if let Some(Value::Object(info)) = node.get("info") {
            for method in info.values() {
                if let Some(params) = method.get("parameters") {
                    walk_schema(params, f);
                }
            }
        }
        if let Some(children) = node.get("children") {
            walk_schemas(children, f);
        }
    }
}

fn params(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[test]
fn every_format_in_apidata_is_known() {
    let Some(tree) = apidata() else { return };
    let mut names = BTreeSet::new();
    walk_schemas(&tree, &mut |s| {
        if let Some(Value::String(name)) = s.get("format") {
            names.insert(name.clone());
        }
    });
    assert!(names.len() > 100, "found only {} formats", names.len());
    let unknown: Vec<&String> = names.iter().filter(|n| !is_known_format(n)).collect();
    assert!(unknown.is_empty(), "unknown formats: {unknown:?}");
}

#[test]
fn every_pattern_in_apidata_compiles() {
    let Some(tree) = apidata() else { return };
    let mut bad = Vec::new();
    let mut count = 0;
    walk_schemas(&tree, &mut |s| {
        if let Some(Value::String(p)) = s.get("pattern") {
            count += 1;
            if oxve_schema::validate::compiled_pattern(p).is_none() {
                bad.push(p.clone());
            }
        }
    });
    assert!(count > 50, "found only {count} patterns");
    assert!(bad.is_empty(), "patterns that do not compile: {bad:?}");
}

#[test]
fn post_access_users() {
    let Some(tree) = apidata() else { return };
    let schema = find_method(&tree, "/access/users", "POST").expect("method exists");
    let good = params(json!({
        "userid": "alice@pve", "email": "", "enable": "1", "expire": "0",
        "groups": "admins,ops", "password": "secret123",
    }));
    let out = validate_params(schema, &good).expect("valid input passes");
    assert_eq!(out["enable"], json!(true));
    assert_eq!(out["expire"], json!(0));
    assert_eq!(out["email"], json!(""));

    let bad = params(json!({
        "userid": "alice", "email": "not-an-email", "enable": "2",
        "password": "short", "bogus": "x", "groups": "a b,c!d",
    }));
    let errors = validate_params(schema, &bad).unwrap_err();
    assert_eq!(
        errors.get("userid"),
        Some("invalid format - value 'alice' does not look like a valid user name\n")
    );
    assert_eq!(
        errors.get("email"),
        Some("invalid format - value does not look like a valid email address\n")
    );
    assert_eq!(
        errors.get("enable"),
        Some("type check ('boolean') failed - got '2'")
    );
    assert_eq!(
        errors.get("password"),
        Some("value must be at least 8 characters long")
    );
    assert_eq!(
        errors.get("bogus"),
        Some(
            "property is not defined in schema and the schema does not allow additional properties"
        )
    );
    assert_eq!(
        errors.get("groups"),
        Some("invalid format - group name 'c!d' contains invalid characters\n")
    );
    let missing = validate_params(schema, &Map::new()).unwrap_err();
    assert_eq!(
        missing.get("userid"),
        Some("property is missing and it is not optional")
    );
}

#[test]
fn put_access_acl() {
    let Some(tree) = apidata() else { return };
    let schema = find_method(&tree, "/access/acl", "PUT").expect("method exists");
    let good = params(json!({
        "path": "/vms/100", "roles": "PVEVMAdmin", "users": "alice@pve;bob@pam",
        "tokens": "alice@pve!ci", "propagate": false,
    }));
    let out = validate_params(schema, &good).expect("valid input passes");
    assert_eq!(out["propagate"], json!(false));

    let bad = params(json!({"path": "/", "roles": "bad role!", "tokens": "alice@pve"}));
    let errors = validate_params(schema, &bad).unwrap_err();
    assert_eq!(
        errors.get("roles"),
        Some("invalid format - role name 'role!' contains invalid characters\n")
    );
    assert_eq!(
        errors.get("tokens"),
        Some("invalid format - value 'alice@pve' does not look like a valid token ID\n")
    );
}

#[test]
fn get_cluster_nextid() {
    let Some(tree) = apidata() else { return };
    let schema = find_method(&tree, "/cluster/nextid", "GET").expect("method exists");
    assert!(validate_params(schema, &Map::new()).unwrap().is_empty());
    let out = validate_params(schema, &params(json!({"vmid": "105"}))).unwrap();
    assert_eq!(out["vmid"], json!(105));
    let out = validate_params(schema, &params(json!({"vmid": 105}))).unwrap();
    assert_eq!(out["vmid"], json!(105));
    let e = validate_params(schema, &params(json!({"vmid": "99"}))).unwrap_err();
    assert_eq!(
        e.get("vmid"),
        Some("invalid format - value does not look like a valid VM ID\n")
    );
    let e = validate_params(schema, &params(json!({"vmid": "1000000000"}))).unwrap_err();
    assert_eq!(
        e.get("vmid"),
        Some("invalid format - value does not look like a valid VM ID\n")
    );
    let e = validate_params(schema, &params(json!({"vmid": "x1"}))).unwrap_err();
    assert_eq!(
        e.get("vmid"),
        Some("type check ('integer') failed - got 'x1'")
    );
}

#[test]
fn post_nodes_qemu() {
    let Some(tree) = apidata() else { return };
    let schema = find_method(&tree, "/nodes/{node}/qemu", "POST").expect("method exists");
    let good = params(json!({
        "node": "pve1", "vmid": "100", "name": "web", "memory": "2048", "cores": 2,
        "net0": "virtio,bridge=vmbr0", "scsi0": "local-lvm:32", "ostype": "l26",
        "start": "true", "onboot": 1, "tags": "a;b", "startup": "order=1,up=30",
        "hotplug": "network,disk", "description": "hello",
    }));
    let out = validate_params(schema, &good).expect("valid input passes");
    assert_eq!(out["start"], json!(true));
    assert_eq!(out["cores"], json!(2));
    assert_eq!(out["vmid"], json!(100));

    let bad = params(json!({
        "node": "-bad", "vmid": "100", "ostype": "beos", "cores": "0",
        "startup": "first", "hotplug": "gpu", "unique": "1",
    }));
    let e = validate_params(schema, &bad).unwrap_err();
    assert_eq!(
        e.get("node"),
        Some("invalid format - value does not look like a valid node name\n")
    );
    assert!(e.get("ostype").is_some_and(
        |m| m.starts_with("value 'beos' does not have a value in the enumeration 'other, ")
    ));
    assert_eq!(e.get("cores"), Some("value must have a minimum value of 1"));
    assert_eq!(
        e.get("startup"),
        Some("invalid format - unable to parse startup options\n")
    );
    assert_eq!(
        e.get("hotplug"),
        Some("invalid format - invalid hotplug feature 'gpu'\n")
    );
    assert_eq!(
        e.get("archive"),
        Some("missing property required by 'unique'")
    );

    // Indexed properties are documented once as `net[n]`.
    let indexed = params(
        json!({"node": "pve1", "vmid": 100, "net31": "virtio", "net32": "virtio",
                                "net[n]": "virtio", "scsi30": "local:1"}),
    );
    let e = validate_params(schema, &indexed).unwrap_err();
    assert_eq!(e.get("net31"), None);
    assert_eq!(e.get("scsi30"), None);
    for key in ["net32", "net[n]"] {
        assert_eq!(
            e.get(key),
            Some("property is not defined in schema and the schema does not allow additional properties")
        );
    }
}

#[test]
fn property_string_sub_schemas_from_apidata() {
    let Some(tree) = apidata() else { return };
    // PUT /cluster/options has several property-string parameters.
    let schema = find_method(&tree, "/cluster/options", "PUT").expect("method exists");
    let out = validate_params(
        schema,
        &params(json!({"mac_prefix": "BC:24:11", "bwlimit": "default=100,move=50"})),
    )
    .expect("valid input passes");
    assert_eq!(out["mac_prefix"], json!("BC:24:11"));
    let e = validate_params(schema, &params(json!({"bwlimit": "fast=1"}))).unwrap_err();
    assert_eq!(
        e.get("bwlimit"),
        Some("invalid format - invalid key in comma-separated list property: fast\n")
    );
    assert!(check_format("pve-storage-id-list", "local,local-lvm").is_ok());
}
