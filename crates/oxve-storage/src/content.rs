//! Content types (`images`, `iso`, ...) and the `content` list of a storage.

use std::collections::BTreeSet;
use std::fmt;

/// What a volume holds. Declared in alphabetical order, which is the order
/// upstream writes a `content` list in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Content {
    Backup,
    Images,
    Import,
    Iso,
    Rootdir,
    Snippets,
    Vztmpl,
}

impl Content {
    /// Every content type.
    pub const ALL: [Content; 7] = [
        Content::Backup,
        Content::Images,
        Content::Import,
        Content::Iso,
        Content::Rootdir,
        Content::Snippets,
        Content::Vztmpl,
    ];

    /// The name used in `storage.cfg` and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Content::Backup => "backup",
            Content::Images => "images",
            Content::Import => "import",
            Content::Iso => "iso",
            Content::Rootdir => "rootdir",
            Content::Snippets => "snippets",
            Content::Vztmpl => "vztmpl",
        }
    }

    /// Parses a content name.
    pub fn parse(name: &str) -> Option<Content> {
        Content::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The sub-directory a file-based storage keeps this content in
    /// (before any `content-dirs` override). Images and container
    /// volumes share `images/`, as upstream.
    pub fn default_dir(self) -> &'static str {
        match self {
            Content::Backup => "dump",
            Content::Images | Content::Rootdir => "images",
            Content::Import => "import",
            Content::Iso => "template/iso",
            Content::Snippets => "snippets",
            Content::Vztmpl => "template/cache",
        }
    }
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A storage's `content` list. Empty is upstream's `none`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentSet(pub BTreeSet<Content>);

impl ContentSet {
    /// Parses `iso,vztmpl` (commas, spaces or semicolons); `none` is the
    /// empty set. Unknown names are returned as the error.
    pub fn parse(text: &str) -> Result<ContentSet, String> {
        let mut set = BTreeSet::new();
        for name in text
            .split([',', ';', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if name == "none" {
                continue;
            }
            set.insert(Content::parse(name).ok_or_else(|| name.to_string())?);
        }
        Ok(ContentSet(set))
    }

    pub fn of(items: &[Content]) -> ContentSet {
        ContentSet(items.iter().copied().collect())
    }

    pub fn contains(&self, c: Content) -> bool {
        self.0.contains(&c)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Content> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for ContentSet {
    /// Upstream's text: sorted, comma separated, `none` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.0.iter().map(|c| c.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_sorted() {
        let set = ContentSet::parse("vztmpl,iso, backup").unwrap();
        assert_eq!(set.to_string(), "backup,iso,vztmpl");
        assert_eq!(ContentSet::parse("none").unwrap().to_string(), "none");
        assert_eq!(ContentSet::parse("iso,bogus"), Err("bogus".to_string()));
    }
}
