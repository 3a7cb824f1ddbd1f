//! The path sent upstream: Kong's v0 joining of the service path and the request path
//! (`kong/router/utils.lua`, `get_upstream_uri_v0`), and the v1 joining of its `traditional`
//! router (`kong/router/traditional.lua`).

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
    let postfix = postfix(path, matched);
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

/// Kong's `v1` joining (a route's `path_handling = "v1"` under `router_flavor =
/// traditional`): the service path and the rest of the request path are joined as strings,
/// with one `/` dropped where both have one.
///
/// ```
/// use kong_pdk::router::upstream_path_v1;
/// // Service path `/service`, route path `/route`:
/// assert_eq!(upstream_path_v1(Some("/service"), "/routereq", Some("/route"), true), "/servicereq");
/// assert_eq!(upstream_path_v1(Some("/service"), "/route", Some("/route"), false), "/serviceroute");
/// assert_eq!(upstream_path_v1(Some("/service/"), "/route/req", Some("/route"), true), "/service/req");
/// ```
pub fn upstream_path_v1(service_path: Option<&str>, path: &str, matched: Option<&str>, strip: bool) -> String {
    let base = service_path.filter(|p| !p.is_empty()).unwrap_or("/");
    let rest = if strip {
        postfix(path, matched)
    } else {
        path.get(1..).unwrap_or("")
    };
    match base.strip_suffix('/') {
        Some(trimmed) if rest.starts_with('/') => format!("{trimmed}{rest}"),
        _ => format!("{base}{rest}"),
    }
}

/// What follows the matched prefix (the whole path but its first `/` when no prefix matched),
/// with one leading dot segment dropped (Kong's `sanitize_uri_postfix`).
fn postfix<'a>(path: &'a str, matched: Option<&str>) -> &'a str {
    let rest = match matched {
        Some(prefix) if path.starts_with(prefix) => &path[prefix.len()..],
        _ => path.get(1..).unwrap_or(""),
    };
    match rest {
        "." | ".." => "",
        p => p.strip_prefix("./").or_else(|| p.strip_prefix("../")).unwrap_or(p),
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

    /// Kong's `spec/fixtures/router_path_handling_tests.lua`, every row, both joinings:
    /// (service path, route path (`None`: a route on hosts), strip_path, path_handling,
    /// request path, expected). `B` = both strip values, `V` = both joinings.
    #[test]
    fn kongs_path_handling_table() {
        use super::upstream_path_v1 as up1;
        #[derive(Clone, Copy)]
        enum Strip {
            No,
            Yes,
            B,
        }
        #[derive(Clone, Copy)]
        enum Join {
            V0,
            V1,
            V,
        }
        use Join::*;
        use Strip::*;
        type Row<'a> = (&'a str, Option<&'a str>, Strip, Join, &'a str, &'a str);
        let r = Some;
        let rows: &[Row] = &[
            ("/", r("/"), B, V, "/", "/"),
            ("/", r("/"), B, V, "/route", "/route"),
            ("/", r("/"), B, V, "/route/", "/route/"),
            ("/", r("/"), B, V, "/routereq", "/routereq"),
            ("/", r("/"), B, V, "/route/req", "/route/req"),
            ("/", r("/route"), No, V, "/route", "/route"),
            ("/", r("/route"), No, V, "/route/", "/route/"),
            ("/", r("/route"), No, V, "/routereq", "/routereq"),
            ("/", r("/route"), Yes, V, "/route", "/"),
            ("/", r("/route"), Yes, V, "/route/", "/"),
            ("/", r("/route"), Yes, V, "/routereq", "/req"),
            ("/", r("/route/"), No, V, "/route/", "/route/"),
            ("/", r("/route/"), No, V, "/route/req", "/route/req"),
            ("/", r("/route/"), Yes, V, "/route/", "/"),
            ("/", r("/route/"), Yes, V, "/route/req", "/req"),
            ("/srv", r("/rou"), No, V0, "/roureq", "/srv/roureq"),
            ("/srv", r("/rou"), No, V1, "/roureq", "/srvroureq"),
            ("/srv", r("/rou"), Yes, V0, "/roureq", "/srv/req"),
            ("/srv", r("/rou"), Yes, V1, "/roureq", "/srvreq"),
            ("/srv/", r("/rou"), No, V, "/rou", "/srv/rou"),
            ("/srv/", r("/rou"), Yes, V0, "/rou", "/srv"),
            ("/srv/", r("/rou"), Yes, V1, "/rou", "/srv/"),
            ("/service", r("/"), B, V, "/", "/service"),
            ("/service", r("/"), B, V0, "/route", "/service/route"),
            ("/service", r("/"), B, V1, "/route", "/serviceroute"),
            ("/service", r("/"), B, V0, "/route/", "/service/route/"),
            ("/service", r("/"), B, V1, "/route/", "/serviceroute/"),
            ("/service", r("/"), B, V0, "/routereq", "/service/routereq"),
            ("/service", r("/"), B, V1, "/routereq", "/serviceroutereq"),
            ("/service", r("/"), B, V0, "/route/req", "/service/route/req"),
            ("/service", r("/"), B, V1, "/route/req", "/serviceroute/req"),
            ("/service", r("/route"), No, V0, "/route", "/service/route"),
            ("/service", r("/route"), No, V1, "/route", "/serviceroute"),
            ("/service", r("/route"), No, V0, "/route/", "/service/route/"),
            ("/service", r("/route"), No, V1, "/route/", "/serviceroute/"),
            ("/service", r("/route"), No, V0, "/routereq", "/service/routereq"),
            ("/service", r("/route"), No, V1, "/routereq", "/serviceroutereq"),
            ("/service", r("/route"), Yes, V, "/route", "/service"),
            ("/service", r("/route"), Yes, V, "/route/", "/service/"),
            ("/service", r("/route"), Yes, V0, "/routereq", "/service/req"),
            ("/service", r("/route"), Yes, V1, "/routereq", "/servicereq"),
            ("/service", r("/route/"), No, V0, "/route/", "/service/route/"),
            ("/service", r("/route/"), No, V1, "/route/", "/serviceroute/"),
            ("/service", r("/route/"), No, V0, "/route/req", "/service/route/req"),
            ("/service", r("/route/"), No, V1, "/route/req", "/serviceroute/req"),
            ("/service", r("/route/"), Yes, V0, "/route/", "/service/"),
            ("/service", r("/route/"), Yes, V1, "/route/", "/service"),
            ("/service", r("/route/"), Yes, V0, "/route/req", "/service/req"),
            ("/service", r("/route/"), Yes, V1, "/route/req", "/servicereq"),
            ("/service/", r("/"), B, V0, "/route/", "/service/route/"),
            ("/service/", r("/"), B, V1, "/route/", "/service/route/"),
            ("/service/", r("/"), B, V, "/", "/service/"),
            ("/service/", r("/"), B, V, "/route", "/service/route"),
            ("/service/", r("/"), B, V, "/routereq", "/service/routereq"),
            ("/service/", r("/"), B, V, "/route/req", "/service/route/req"),
            ("/service/", r("/route"), No, V, "/route", "/service/route"),
            ("/service/", r("/route"), No, V, "/route/", "/service/route/"),
            ("/service/", r("/route"), No, V, "/routereq", "/service/routereq"),
            ("/service/", r("/route"), Yes, V0, "/route", "/service"),
            ("/service/", r("/route"), Yes, V1, "/route", "/service/"),
            ("/service/", r("/route"), Yes, V, "/route/", "/service/"),
            ("/service/", r("/route"), Yes, V, "/routereq", "/service/req"),
            ("/service/", r("/route/"), No, V, "/route/", "/service/route/"),
            ("/service/", r("/route/"), No, V, "/route/req", "/service/route/req"),
            ("/service/", r("/route/"), Yes, V, "/route/", "/service/"),
            ("/service/", r("/route/"), Yes, V, "/route/req", "/service/req"),
            ("/", None, B, V, "/", "/"),
            ("/", None, B, V, "/route", "/route"),
            ("/", None, B, V, "/route/", "/route/"),
            ("/service", None, B, V, "/", "/service"),
            ("/service", None, B, V0, "/route", "/service/route"),
            ("/service", None, B, V1, "/route", "/serviceroute"),
            ("/service", None, B, V0, "/route/", "/service/route/"),
            ("/service", None, B, V1, "/route/", "/serviceroute/"),
            ("/service/", None, B, V, "/", "/service/"),
            ("/service/", None, B, V, "/route", "/service/route"),
            ("/service/", None, B, V, "/route/", "/service/route/"),
        ];
        // Rows 78 to 113: dot segments after the route path, plain and percent-encoded.
        let mut dots = Vec::new();
        for (raw, dotted) in [
            ("/route./req", "./req"),
            ("/route%2E/req", "./req"),
            ("/route%2e/req", "./req"),
            ("/route../req", "../req"),
            ("/route%2E%2E/req", "../req"),
            ("/route%2e%2E/req", "../req"),
        ] {
            dots.push(("/service", r("/route"), Yes, V0, raw, "/service/req".to_owned()));
            dots.push(("/service", r("/route"), Yes, V1, raw, "/servicereq".to_owned()));
            dots.push(("/service/", r("/route"), Yes, V, raw, "/service/req".to_owned()));
            dots.push(("/service", r("/route"), No, V0, raw, format!("/service/route{dotted}")));
            dots.push(("/service", r("/route"), No, V1, raw, format!("/serviceroute{dotted}")));
            dots.push(("/service/", r("/route"), No, V, raw, format!("/service/route{dotted}")));
        }
        let all = rows
            .iter()
            .map(|&(s, route, strip, join, req, want)| (s, route, strip, join, req, want.to_owned()))
            .chain(dots);
        let mut checked = 0;
        for (service, route, strip, join, request, want) in all {
            let strips: &[bool] = match strip {
                No => &[false],
                Yes => &[true],
                B => &[false, true],
            };
            let joins: &[bool] = match join {
                V0 => &[false],
                V1 => &[true],
                V => &[false, true],
            };
            // What the router hands over: the normalised path and the prefix it matched.
            let path = crate::pdk::request::normalize_path(request);
            for &strip in strips {
                for &v1 in joins {
                    let got = if v1 {
                        up1(Some(service), &path, route, strip)
                    } else {
                        up(Some(service), &path, route, strip)
                    };
                    assert_eq!(
                        got, want,
                        "service {service}, route {route:?}, strip {strip}, v1 {v1}, request {request}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 212, "every expanded row of Kong's table (113 rows)");
    }
}
