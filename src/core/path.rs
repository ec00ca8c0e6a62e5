//! ZooKeeper path rules (`PathUtils.validatePath`) and path arithmetic.

use crate::error::{ZkError, ZkResult};

/// Checks `path` the way ZooKeeper does; violations are BADARGUMENTS.
pub fn validate(path: &str) -> ZkResult<()> {
    if !path.starts_with('/') {
        return Err(ZkError::BadArguments);
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(ZkError::BadArguments);
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(ZkError::BadArguments);
        }
    }
    if path.chars().any(forbidden) {
        return Err(ZkError::BadArguments);
    }
    Ok(())
}

/// Characters ZooKeeper refuses in a path.
fn forbidden(c: char) -> bool {
    c == '\u{0}'
        || ('\u{1}'..='\u{1f}').contains(&c)
        || ('\u{7f}'..='\u{9f}').contains(&c)
        || ('\u{e000}'..='\u{f8ff}').contains(&c)
        || ('\u{fff0}'..='\u{ffff}').contains(&c)
}

/// Whether `name` is a valid last segment: what `validate` requires of each segment, so a
/// valid path joined with a valid segment is a valid path. Printable ASCII is the fast case.
pub fn valid_segment(name: &[u8]) -> bool {
    if name.is_empty() || name == b"." || name == b".." {
        return false;
    }
    if name.iter().all(|&c| (0x20..0x7f).contains(&c) && c != b'/') {
        return true;
    }
    std::str::from_utf8(name).is_ok_and(|s| !s.contains('/') && !s.chars().any(forbidden))
}

/// The parent of a valid, non-root path.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "/",
    }
}

/// The last segment of a valid, non-root path.
pub fn name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `base` joined with a child name.
pub fn join(base: &str, child: &str) -> String {
    if base == "/" {
        format!("/{child}")
    } else {
        format!("{base}/{child}")
    }
}

/// The proper ancestors of `path`, nearest first, ending with "/".
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut current = path;
    std::iter::from_fn(move || {
        if current == "/" {
            return None;
        }
        current = parent(current);
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths_pass() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/zookeeper/quota",
            "/ä/ö",
            "/a.b",
            "/..a",
        ] {
            assert_eq!(validate(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn invalid_paths_are_bad_arguments() {
        for p in [
            "",
            "a",
            "/a/",
            "//",
            "/a//b",
            "/.",
            "/a/..",
            "/a\u{0}",
            "/a\u{1}",
            "/\u{fff5}",
        ] {
            assert_eq!(validate(p), Err(ZkError::BadArguments), "{p:?}");
        }
    }

    #[test]
    fn parent_and_name() {
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(name("/a/b/c"), "c");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }

    #[test]
    fn ancestors_walk_to_root() {
        let a: Vec<&str> = ancestors("/a/b/c").collect();
        assert_eq!(a, vec!["/a/b", "/a", "/"]);
        assert_eq!(ancestors("/").count(), 0);
    }
}
