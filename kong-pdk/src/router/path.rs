//! The path sent upstream: Kong's v0 joining of the service path and the request path
//! (`kong/router/utils.lua`, `get_upstream_uri_v0`).

/// Joins `service_path` (None = `/`) with the request `path`, given the path prefix the
/// route matched and `strip_path`.
///
/// ```
/// use kong_pdk::router::upstream_path;
/// // Route path `/foo`, no service path, strip_path:
/// assert_eq!(upstream_path(None, "/foo/bar", Some("/foo"), true), "/bar");
/// assert_eq!(upstream_path(None, "/foo", Some("/foo"), true), "/");
/// // Service path `/svc`:
/// assert_eq!(upstream_path(Some("/svc"), "/foo/bar", Some("/foo"), true), "/svc/bar");
/// assert_eq!(upstream_path(Some("/svc"), "/foo/bar", Some("/foo"), false), "/svc/foo/bar");
/// ```
pub fn upstream_path(service_path: Option<&str>, path: &str, matched: Option<&str>, strip: bool) -> String {
    let base = service_path.filter(|p| !p.is_empty()).unwrap_or("/");
    if !strip {
        return if base.ends_with('/') {
            format!("{base}{}", path.get(1..).unwrap_or(""))
        } else if path == "/" {
            base.to_owned()
        } else {
            format!("{base}{path}")
        };
    }
    let postfix = match matched {
        Some(prefix) if path.starts_with(prefix) => &path[prefix.len()..],
        _ => path.get(1..).unwrap_or(""),
    };
    // Kong sanitises one leading dot segment left by the strip (`sanitize_uri_postfix`).
    let postfix = match postfix {
        "." | ".." => "",
        p => p.strip_prefix("./").or_else(|| p.strip_prefix("../")).unwrap_or(p),
    };
    if let Some(trimmed) = base.strip_suffix('/') {
        if postfix.is_empty() {
            if base == "/" {
                "/".to_owned()
            } else if path.ends_with('/') {
                base.to_owned()
            } else {
                trimmed.to_owned()
            }
        } else if postfix.starts_with('/') {
            format!("{trimmed}{postfix}")
        } else {
            format!("{base}{postfix}")
        }
    } else if postfix.is_empty() {
        if path.len() > 1 && path.ends_with('/') {
            format!("{base}/")
        } else {
            base.to_owned()
        }
    } else if postfix.starts_with('/') {
        format!("{base}{postfix}")
    } else {
        format!("{base}/{postfix}")
    }
}

#[cfg(test)]
mod tests {
    use super::upstream_path as up;

    #[test]
    fn kongs_v0_table() {
        // (service path, request path, matched prefix, strip, expected)
        type Case<'a> = (Option<&'a str>, &'a str, Option<&'a str>, bool, &'a str);
        let cases: &[Case] = &[
            (None, "/foo/bar", Some("/foo"), true, "/bar"),
            (None, "/foo", Some("/foo"), true, "/"),
            (None, "/foobar", Some("/foo"), true, "/bar"),
            (None, "/foo/", Some("/foo"), true, "/"),
            (Some("/svc"), "/foo/bar", Some("/foo"), true, "/svc/bar"),
            (Some("/svc"), "/foo", Some("/foo"), true, "/svc"),
            (Some("/svc"), "/foo/", Some("/foo"), true, "/svc/"),
            (Some("/svc"), "/foobar", Some("/foo"), true, "/svc/bar"),
            (Some("/svc/"), "/foo/bar", Some("/foo"), true, "/svc/bar"),
            (Some("/svc/"), "/foo", Some("/foo"), true, "/svc"),
            (Some("/svc/"), "/foo/", Some("/foo"), true, "/svc/"),
            (Some("/svc/"), "/foobar", Some("/foo"), true, "/svc/bar"),
            (Some("/svc"), "/foo/bar", Some("/foo"), false, "/svc/foo/bar"),
            (Some("/svc"), "/", Some("/"), false, "/svc"),
            (Some("/svc/"), "/foo/bar", Some("/foo"), false, "/svc/foo/bar"),
            (Some("/"), "/foo/bar", Some("/foo"), false, "/foo/bar"),
            (None, "/foo/bar", None, true, "/foo/bar"),
            (None, "/anything", Some("/"), true, "/anything"),
            (Some("/svc"), "/anything", None, true, "/svc/anything"),
            // One leading dot segment left by the strip goes (`sanitize_uri_postfix`).
            (None, "/foo./x", Some("/foo"), true, "/x"),
            (Some("/svc"), "/foo../x", Some("/foo"), true, "/svc/x"),
            (Some("/svc"), "/foo..", Some("/foo"), true, "/svc"),
            (None, "/foo.", Some("/foo"), true, "/"),
            (None, "/foo././x", Some("/foo"), true, "/./x"),
        ];
        for (svc, path, matched, strip, want) in cases {
            assert_eq!(
                &up(*svc, path, *matched, *strip),
                want,
                "service {svc:?}, path {path}, matched {matched:?}, strip {strip}"
            );
        }
    }
}
