//! Keeps HAProxy's config file in step with the runtime state: the servers of a backend live in a
//! block between marker comments that hotswapd owns; everything else in the file is left alone.

/// Rewrites (or creates, right after the `backend NAME` line) the managed block of `backend`.
pub fn rewrite_managed_block(
    text: &str,
    backend: &str,
    server_lines: &[String],
) -> Result<String, String> {
    let begin = format!("# hotswap:begin {backend}");
    let end = format!("# hotswap:end {backend}");
    let lines: Vec<&str> = text.lines().collect();
    let backend_at = lines
        .iter()
        .position(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("backend") && w.next() == Some(backend)
        })
        .ok_or_else(|| format!("no section \"backend {backend}\""))?;
    let section_end = lines[backend_at + 1..]
        .iter()
        .position(|l| {
            let first = l.split_whitespace().next().unwrap_or("");
            !l.starts_with(char::is_whitespace)
                && matches!(
                    first,
                    "backend"
                        | "frontend"
                        | "listen"
                        | "defaults"
                        | "global"
                        | "peers"
                        | "resolvers"
                        | "userlist"
                        | "program"
                        | "http-errors"
                        | "ring"
                        | "cache"
                        | "mailers"
                )
        })
        .map(|i| backend_at + 1 + i)
        .unwrap_or(lines.len());
    let find = |marker: &str| {
        lines[backend_at + 1..section_end]
            .iter()
            .position(|l| {
                let t = l.trim();
                t == marker
                    || t.strip_prefix(marker)
                        .is_some_and(|rest| rest.starts_with(' '))
            })
            .map(|i| backend_at + 1 + i)
    };
    let (cut_from, cut_to) = match (find(&begin), find(&end)) {
        (Some(b), Some(e)) if b < e => (b, e + 1),
        (None, None) => (backend_at + 1, backend_at + 1),
        _ => {
            return Err(format!(
                "markers \"{begin}\" / \"{end}\" in backend {backend} are broken"
            ))
        }
    };
    let mut out: Vec<String> = lines[..cut_from].iter().map(|l| l.to_string()).collect();
    out.push(format!("    {begin} (managed by hotswapd: do not edit)"));
    // maintenance mode's rule, off until hotswapd sets its variables (maintenance.rs)
    out.push(format!("    {}", super::maintenance::rule(backend)));
    out.extend(server_lines.iter().map(|l| format!("    {l}")));
    out.push(format!("    {end}"));
    out.extend(lines[cut_to..].iter().map(|l| l.to_string()));
    let mut text = out.join("\n");
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "global\n    maxconn 100\n\nbackend web\n    balance roundrobin\n\nbackend api\n    balance roundrobin\n";

    #[test]
    fn inserts_then_replaces_the_block_and_touches_nothing_else() {
        let once =
            rewrite_managed_block(CFG, "web", &["server web-a 127.0.0.1:1 check".into()]).unwrap();
        let rule = crate::balancer::maintenance::rule("web");
        assert!(once.contains(&format!("backend web\n    # hotswap:begin web (managed by hotswapd: do not edit)\n    {rule}\n    server web-a 127.0.0.1:1 check\n    # hotswap:end web\n    balance roundrobin\n")), "{once}");
        let twice = rewrite_managed_block(&once, "web", &["server web-b 127.0.0.1:2 check".into()])
            .unwrap();
        assert!(!twice.contains("web-a"));
        assert!(twice.contains("server web-b 127.0.0.1:2 check"));
        assert_eq!(twice.matches("hotswap:begin web").count(), 1);
        assert!(
            twice.ends_with("backend api\n    balance roundrobin\n"),
            "{twice}"
        );
        let other = rewrite_managed_block(&twice, "api", &[]).unwrap();
        assert!(other.contains("server web-b"));
        assert!(other.contains("# hotswap:begin api"));
    }

    #[test]
    fn missing_backend_is_named() {
        let err = rewrite_managed_block(CFG, "nope", &[]).unwrap_err();
        assert!(err.contains("backend nope"), "{err}");
    }

    #[test]
    fn marker_of_a_prefix_named_backend_is_not_confused() {
        let cfg = "backend web\n    # hotswap:begin web\n    # hotswap:end web\nbackend web2\n    # hotswap:begin web2\n    server x 127.0.0.1:9\n    # hotswap:end web2\n";
        let out = rewrite_managed_block(cfg, "web", &["server y 127.0.0.1:8".into()]).unwrap();
        assert!(out.contains("server x 127.0.0.1:9"));
        assert!(out.contains("server y 127.0.0.1:8"));
    }
}
