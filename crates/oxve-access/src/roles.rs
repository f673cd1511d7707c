//! Privileges and the built-in roles, with upstream's exact lists (PVE 9).

/// Every valid privilege name.
pub const PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

const VM_ADMIN: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// Built-in role names, sorted.
pub const BUILTIN_ROLES: &[&str] = &[
    "Administrator",
    "NoAccess",
    "PVEAdmin",
    "PVEAuditor",
    "PVEDatastoreAdmin",
    "PVEDatastoreUser",
    "PVEMappingAdmin",
    "PVEMappingUser",
    "PVEPoolAdmin",
    "PVEPoolUser",
    "PVESDNAdmin",
    "PVESDNUser",
    "PVESysAdmin",
    "PVETemplateUser",
    "PVEUserAdmin",
    "PVEVMAdmin",
    "PVEVMUser",
];

/// The privileges of a built-in role.
pub fn builtin(role: &str) -> Option<Vec<&'static str>> {
    let list: Vec<&'static str> = match role {
        "Administrator" => PRIVILEGES.to_vec(),
        "NoAccess" => vec![],
        "PVEAdmin" => PRIVILEGES
            .iter()
            .copied()
            .filter(|p| {
                !matches!(
                    *p,
                    "Mapping.Modify"
                        | "Permissions.Modify"
                        | "Realm.Allocate"
                        | "Sys.AccessNetwork"
                        | "Sys.Incoming"
                        | "Sys.Modify"
                        | "Sys.PowerMgmt"
                )
            })
            .collect(),
        "PVEAuditor" => vec![
            "Datastore.Audit",
            "Mapping.Audit",
            "Pool.Audit",
            "SDN.Audit",
            "Sys.Audit",
            "VM.Audit",
            "VM.GuestAgent.Audit",
        ],
        "PVEDatastoreAdmin" => vec![
            "Datastore.Allocate",
            "Datastore.AllocateSpace",
            "Datastore.AllocateTemplate",
            "Datastore.Audit",
        ],
        "PVEDatastoreUser" => vec!["Datastore.AllocateSpace", "Datastore.Audit"],
        "PVEMappingAdmin" => vec!["Mapping.Audit", "Mapping.Modify", "Mapping.Use"],
        "PVEMappingUser" => vec!["Mapping.Audit", "Mapping.Use"],
        "PVEPoolAdmin" => vec!["Pool.Allocate", "Pool.Audit"],
        "PVEPoolUser" => vec!["Pool.Audit"],
        "PVESDNAdmin" => vec!["SDN.Allocate", "SDN.Audit", "SDN.Use"],
        "PVESDNUser" => vec!["SDN.Audit", "SDN.Use"],
        "PVESysAdmin" => vec!["Sys.Audit", "Sys.Console", "Sys.Syslog"],
        "PVETemplateUser" => vec!["VM.Audit", "VM.Clone"],
        "PVEUserAdmin" => vec!["Group.Allocate", "Realm.AllocateUser", "User.Modify"],
        "PVEVMAdmin" => VM_ADMIN.to_vec(),
        "PVEVMUser" => vec![
            "VM.Audit",
            "VM.Backup",
            "VM.Config.CDROM",
            "VM.Config.Cloudinit",
            "VM.Console",
            "VM.GuestAgent.Audit",
            "VM.GuestAgent.FileRead",
            "VM.GuestAgent.FileSystemMgmt",
            "VM.GuestAgent.FileWrite",
            "VM.PowerMgmt",
        ],
        _ => return None,
    };
    Some(list)
}

pub fn is_builtin(role: &str) -> bool {
    BUILTIN_ROLES.contains(&role)
}

pub fn is_privilege(name: &str) -> bool {
    PRIVILEGES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roles_are_complete_and_valid() {
        assert_eq!(PRIVILEGES.len(), 47);
        for r in BUILTIN_ROLES {
            let privs = builtin(r).unwrap();
            assert!(privs.iter().all(|p| is_privilege(p)), "{r}");
        }
        assert_eq!(builtin("PVEAdmin").unwrap().len(), 40);
        assert!(builtin("nope").is_none());
    }
}
