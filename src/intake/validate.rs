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

pub fn check_image(image: &str) -> Result<(), String> {
    let ok = !image.is_empty()
        && image.len() <= 255
        && !image.starts_with(['-', ':', '/', '@'])
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image {image:?} is not a valid image reference (expected e.g. \"web:2\" or \"registry:5000/team/web:2\")"
        ))
    }
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
        assert!(check_image("web:2").is_ok());
        assert!(check_image("web 2").unwrap_err().contains("web 2"));
        assert!(check_image("").is_err());
        assert!(check_version("2.1-rc1").is_ok());
        assert!(check_version("2\n\u{1b}[31m")
            .unwrap_err()
            .contains("printable"));
        assert!(check_version("").is_err());
    }
}
