//! Property tests of the parsers that take what clients, upstreams and operators send:
//! arbitrary input never panics and never makes memory grow beyond the input's size. 256 cases each by
//! default; `PROPTEST_CASES=100000 cargo test prop_` runs longer.

use proptest::prelude::*;

use super::{h1client, h1guard};

/// Request bytes built from the pieces heads are made of, so the cases reach deep states.
fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"GET ".to_vec()),
        Just(b"POST /p?q=1 HTTP/1.1".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"Host: x".to_vec()),
        Just(b"Content-Length: 5".to_vec()),
        Just(b"Transfer-Encoding: chunked".to_vec()),
        Just(b"Upgrade: websocket".to_vec()),
        Just(b"PRI * HTTP/2.0".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn prop_head_checks_never_panic(bytes in head_bytes()) {
        let _ = h1guard::check_head_for_tests(&bytes);
    }

    #[test]
    fn prop_router_lookups_never_panic(path in "[/a-z0-9~.%]{0,40}", host in "[a-z0-9.:\\[\\]-]{0,20}") {
        use std::sync::Arc;
        let mut plain = crate::entities::Route::new(&["/a", "/a/b"]);
        plain.hosts = Some(vec!["example.test".into(), "*.wild.test".into()]);
        let regex = crate::entities::Route::new(&[r"~/r/(?<id>\d+)$"]);
        let router = crate::router::Router::new([(Arc::new(plain), None), (Arc::new(regex), None)]).unwrap();
        let headers = http::HeaderMap::new();
        let found = router.find(&crate::router::RequestInfo {
            method: "GET",
            host: &host,
            port: 80,
            path: &path,
            headers: &headers,
            sni: None,
        });
        if let Some(m) = found {
            prop_assert!(path.starts_with("/a") || path.starts_with("/r/"));
            prop_assert!(m.matched_path.is_some());
        }
    }

    #[test]
    fn prop_declarative_configs_never_panic(text in "[a-z_:\\- \\n\\[\\]{}\"0-9./]{0,200}") {
        let _ = super::declarative::Config::parse(&text);
        let _ = super::declarative::Config::parse(&format!("_format_version: \"3.0\"\n{text}"));
    }

    #[test]
    fn prop_upstream_answers_never_panic(bytes in head_bytes(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut text = b"HTTP/1.1 200 OK\r\n".to_vec();
        text.extend_from_slice(&bytes);
        text.extend_from_slice(&tail);
        for answer in [&bytes[..], &text[..]] {
            for is_head in [false, true] {
                let _ = h1client::parse_head_for_tests(answer, is_head);
            }
            let _ = h1client::dechunk_for_tests(answer, 3);
        }
    }

    #[test]
    fn prop_chunked_bodies_decode_to_what_was_encoded(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
        step in 1usize..64,
        extension in proptest::bool::ANY,
    ) {
        use std::fmt::Write as _;
        let mut wire = Vec::new();
        for chunk in &chunks {
            let mut line = format!("{:X}", chunk.len());
            if extension {
                let _ = write!(line, " ;a=\"b\"");
            }
            wire.extend_from_slice(line.as_bytes());
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\nT: 1\r\n\r\n");
        let (data, left) = h1client::dechunk_for_tests(&wire, step).expect("a valid body decodes");
        prop_assert_eq!(data, chunks.concat());
        prop_assert_eq!(left, 0);
    }
}
