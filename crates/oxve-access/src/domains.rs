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
