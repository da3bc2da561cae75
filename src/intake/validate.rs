//! The one validation of what a release names: deploy ids and image references end up in
//! container names, labels and file names, so they are kept plain.

/// Deploy ids and image references end up in names, labels and file names: keep them plain.
pub fn check_deploy_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("deploy_id {id:?}: use 1-64 letters, digits, '.', '-' or '_', starting with a letter or digit"))
    }
}

/// An image reference in Docker's grammar (distribution/reference), checked here so a
/// reference Docker would refuse is refused at intake, naming the part that is wrong:
///
/// ```text
/// reference := name [ ":" tag ] [ "@" digest ]
/// name      := [ registry "/" ] path-component [ "/" path-component ]*     (at most 255)
/// registry  := host [ ":" port ]      the first component, when it holds "." or ":" or is
///                                     "localhost"; host: DNS labels or [IPv6]
/// path-component := [a-z0-9]+ ( separator [a-z0-9]+ )*    separator := "." | "_" | "__" | "-"+
/// tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
/// digest    := "sha256:" 64 hex | "sha384:" 96 hex | "sha512:" 128 hex     (lowercase hex)
/// ```
pub fn check_image(image: &str) -> Result<(), String> {
    image_reference(image).map_err(|what| {
        format!(
            "image {image:?} is not a valid image reference: {what} (expected e.g. \"web:2\", \"registry:5000/team/web:2\" or \"web@sha256:<64 hex digits>\")"
        )
    })
}

/// The longest name (registry and path) Docker takes.
const MAX_NAME: usize = 255;
/// The longest tag Docker takes.
const MAX_TAG: usize = 128;

fn image_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("it is empty".into());
    }
    if let Some(c) = reference
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "it contains {c:?} (no spaces or control characters)"
        ));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    // a tag follows the last ':' that comes after every '/' (an earlier one is a port)
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    check_name(name)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name before the tag or digest is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "the name is {} characters long (at most {MAX_NAME})",
            name.len()
        ));
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), path)
        }
        _ => (None, name),
    };
    if let Some(registry) = registry {
        check_registry(registry)?;
        if path.is_empty() {
            return Err(format!(
                "nothing follows the registry {registry:?}: name the repository"
            ));
        }
    }
    for component in path.split('/') {
        check_path_component(component)?;
    }
    if registry.is_none()
        && path.len() == 64
        && path.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("a name of 64 hex digits reads as an image id".into());
    }
    Ok(())
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with separator `.`, `_`, `__` or one or more `-`.
fn check_path_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("a path component is empty ('/' at an end or twice in a row)".into());
    }
    if c.chars().any(|ch| ch.is_ascii_uppercase()) {
        return Err(format!(
            "path component {c:?} has uppercase letters (repository names are lowercase)"
        ));
    }
    if let Some(ch) = c
        .chars()
        .find(|ch| !matches!(ch, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        return Err(format!(
            "path component {c:?} has {ch:?} (lowercase letters, digits, '.', '_' and '-' only)"
        ));
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(format!(
            "path component {c:?} must start and end with a letter or digit"
        ));
    }
    // every run of separators between letters and digits is ".", "_", "__" or "-"+
    for run in c.split(|ch: char| ch.is_ascii_alphanumeric()) {
        let ok =
            run.is_empty() || matches!(run, "." | "_" | "__") || run.bytes().all(|b| b == b'-');
        if !ok {
            return Err(format!(
                "path component {c:?} has the separator {run:?} (use '.', '_', '__' or dashes)"
            ));
        }
    }
    Ok(())
}

/// `host [":" port]`: DNS labels (letters of either case, digits, inner '-') or a bracketed
/// IPv6 address, and a port 1-65535.
fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(inner) = registry.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("registry {registry:?} opens '[' without ']'"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "registry {registry:?}: {addr:?} is not an IPv6 address"
            ));
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("registry {registry:?}: only a port may follow ']'")),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(format!(
                "registry host {host:?} is not a host name or address (letters, digits, inner '-', parts joined by '.')"
            ));
        }
    }
    if let Some(port) = port {
        let ok = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !ok {
            return Err(format!(
                "registry port {port:?} is not a number from 1 to 65535"
            ));
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match tag.as_bytes() {
        [] => Err("the tag after ':' is empty".into()),
        _ if tag.len() > MAX_TAG => Err(format!(
            "the tag is {} characters long (at most {MAX_TAG})",
            tag.len()
        )),
        [first, ..] if !word(*first) => Err(format!(
            "tag {tag:?} must start with a letter, digit or '_'"
        )),
        [_, rest @ ..] => match rest.iter().find(|&&b| !(word(b) || b == b'.' || b == b'-')) {
            Some(&b) => Err(format!(
                "tag {tag:?} has {:?} (letters, digits, '_', '.' and '-' only)",
                b as char
            )),
            None => Ok(()),
        },
    }
}

/// `algorithm:hex` for the algorithms Docker verifies: the hex is lowercase and as long as the
/// algorithm's output.
fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(if digest.is_empty() {
            "the digest after '@' is empty".into()
        } else {
            format!("digest {digest:?} is not ALGORITHM:HEX (e.g. sha256:<64 hex digits>)")
        });
    };
    let digits = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "digest algorithm {algorithm:?} is not sha256, sha384 or sha512"
            ))
        }
    };
    let lower_hex = hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex.len() != digits || !lower_hex {
        return Err(format!(
            "{algorithm} digest {hex:?} is not {digits} lowercase hex digits"
        ));
    }
    Ok(())
}

/// The version a release reports by default: the image's tag (`web:2` → `2`), else "latest".
pub fn default_version(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag.to_string(),
        _ => "latest".to_string(),
    }
}

/// What a release reports on its health route: printable, 1-128 characters, for every kind of
/// service (it ends up in labels, logs and reports).
pub fn check_version(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 128 || v.contains(char::is_control) {
        return Err(format!("version {v:?} must be 1-128 printable characters"));
    }
    Ok(())
}

/// A sha256 given for an archive must be 64 hex digits.
pub fn check_sha256(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("archive_sha256 {s:?} is not 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_defaults_to_the_tag() {
        assert_eq!(default_version("web:2"), "2");
        assert_eq!(default_version("registry:5000/team/web:v3"), "v3");
        assert_eq!(default_version("registry:5000/team/web"), "latest");
    }

    #[test]
    fn bad_ids_and_images_are_named() {
        assert!(check_deploy_id("d-123.a").is_ok());
        assert!(check_deploy_id("../x").unwrap_err().contains("../x"));
        assert!(check_version("2.1-rc1").is_ok());
        assert!(check_version("2\n\u{1b}[31m")
            .unwrap_err()
            .contains("printable"));
        assert!(check_version("").is_err());
    }

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn image_references_docker_takes_are_taken() {
        let digest = format!("registry.example.com/team/app@sha256:{HEX64}");
        let tagged_digest = format!("web:2@sha256:{HEX64}");
        let sha512 = format!("web@sha512:{HEX64}{HEX64}");
        let tag128 = format!("web:{}", "v".repeat(128));
        let name255 = format!("{}/a", "a".repeat(253));
        for ok in [
            "web",
            "web:2",
            "web:latest",
            "127.0.0.1:5000/t-x-web:1",
            "t-badreq-4242-web:1",
            "hotswap-no-such-image:7",
            "localhost/app",
            "localhost:5000/app:v1.2-rc_3",
            "registry.example.com/team/app",
            "Registry.Example.com:443/team/app:2",
            "[::1]:5000/app:1",
            "[fe80::1]/app",
            "library/nginx:1.27",
            "team/a.b_c__d---e/f:_x",
            "web:V2",
            &digest,
            &tagged_digest,
            &sha512,
            &tag128,
            &name255,
        ] {
            assert_eq!(check_image(ok), Ok(()), "{ok}");
        }
    }

    /// The reference is refused with the part that is wrong named in the message.
    fn refused(image: &str, names: &str) {
        let e = check_image(image).expect_err(image);
        assert!(e.contains("not a valid image reference"), "{image}: {e}");
        assert!(e.contains(names), "{image}: {e:?} should name {names:?}");
    }

    #[test]
    fn image_references_docker_refuses_are_refused_naming_the_part() {
        refused("", "empty");
        refused("Web:2", "path component \"Web\" has uppercase");
        refused("team/MyApp", "path component \"MyApp\" has uppercase");
        refused("web:", "the tag after ':' is empty");
        refused(":tag", "the name before the tag or digest is empty");
        refused("a//b", "a path component is empty");
        refused("team/", "a path component is empty");
        refused("/web", "a path component is empty");
        refused("web-", "must start and end with a letter or digit");
        refused("-web", "must start and end with a letter or digit");
        refused("web-:1", "\"web-\" must start and end");
        refused("a..b", "separator \"..\"");
        refused("a___b", "separator \"___\"");
        refused("a_-b", "separator \"_-\"");
        refused("web 2", "contains ' '");
        refused("web:2\n", "contains '\\n'");
        refused("web\u{1b}[31m:2", "contains '\\u{1b}'");
        refused("wéb:2", "has 'é'");
        refused("web:2:3", "path component \"web:2\" has ':'");
        refused("web:.x", "must start with a letter, digit or '_'");
        refused("web:a/b", "registry port \"a\"");
        refused(
            &format!("web:{}", "v".repeat(129)),
            "the tag is 129 characters long",
        );
        refused(
            &format!("{}/a", "a".repeat(254)),
            "the name is 256 characters long",
        );
        refused("web@", "the digest after '@' is empty");
        refused("web@sha256", "is not ALGORITHM:HEX");
        refused(
            "web@md5:0123456789abcdef0123456789abcdef",
            "algorithm \"md5\"",
        );
        refused("web@sha256:abc", "not 64 lowercase hex digits");
        refused(
            &format!("web@sha256:{}", HEX64.to_uppercase()),
            "not 64 lowercase hex",
        );
        refused(
            &format!("web@sha256:{HEX64}@sha256:{HEX64}"),
            "not 64 lowercase hex",
        );
        refused("reg-.example.com/app", "registry host \"reg-.example.com\"");
        refused("reg..example.com/app", "registry host");
        refused("localhost:0/app", "registry port \"0\"");
        refused("localhost:99999/app", "registry port \"99999\"");
        refused("localhost:/app", "registry port \"\"");
        refused("[::1/app", "without ']'");
        refused("[zz::1]:5000/app", "is not an IPv6 address");
        refused("localhost:5000/", "nothing follows the registry");
        refused(HEX64, "reads as an image id");
    }
}
