//! `domains.cfg`: the realms, in section-config form.

use crate::AccessError;
use oxve_schema::section::{Section, SectionConfig};

/// Realm types this build authenticates against.
pub const AUTH_TYPES: &[&str] = &["pam", "pve"];

/// The parsed `domains.cfg`.
#[derive(Debug, Clone)]
pub struct Domains {
    pub config: SectionConfig,
}

impl Domains {
    pub fn parse(text: &str) -> Domains {
        Domains {
            config: SectionConfig::parse(text),
        }
    }

    pub fn write(&self) -> Result<String, AccessError> {
        self.config
            .write()
            .map_err(|e| AccessError::Parse(e.to_string()))
    }

    /// The realm's section.
    pub fn realm(&self, name: &str) -> Option<&Section> {
        self.config.sections.iter().find(|s| s.id == name)
    }

    /// The realm's type (`pam`, `pve`, `ldap`, ...).
    pub fn realm_type(&self, name: &str) -> Option<&str> {
        self.realm(name).map(|s| s.ty.as_str())
    }

    pub fn realms(&self) -> impl Iterator<Item = &Section> {
        self.config.sections.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `domains.cfg` as upstream writes it on a fresh install, plus an LDAP
    /// realm with a flag line: parsed and written back byte for byte.
    const UPSTREAM: &str = "pam: pam\n\tcomment Linux PAM standard authentication\n\npve: pve\n\tcomment Proxmox VE authentication server\n\tdefault 1\n\nldap: corp\n\tbase_dn dc=corp,dc=example\n\tserver1 ldap.corp.example\n\tuser_attr uid\n\tsecure\n\n";

    #[test]
    fn round_trips_upstream_text() {
        let d = Domains::parse(UPSTREAM);
        assert_eq!(d.realm_type("pam"), Some("pam"));
        assert_eq!(d.realm_type("corp"), Some("ldap"));
        assert_eq!(d.realm("pve").and_then(|r| r.get("default")), Some("1"));
        assert!(d.realm("nope").is_none());
        let written = d.write().unwrap();
        assert_eq!(written.trim_end(), UPSTREAM.trim_end());
    }
}
