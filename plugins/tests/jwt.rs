//! jwt end to end (Kong's `spec/03-plugins/16-jwt`): credentials through the Admin API or
//! kong.yml, tokens signed here (HS256, ES256, ES512, EdDSA), the proxy's answers.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Blueprint, Conf, Strategy};
use kong_plugins::jwt::Jwt;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// Keys for the asymmetric credentials: (ES256 pkcs8, its public PEM), (Ed25519 pkcs8, PEM),
/// (the P-521 scalar, PEM).
struct Keys {
    es: (Vec<u8>, String),
    ed: (Vec<u8>, String),
    p521: (Vec<u8>, String),
}

fn keys() -> Keys {
    let rng = SystemRandom::new();
    let es = signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let es_pair =
        signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, es.as_ref(), &rng).unwrap();
    // SubjectPublicKeyInfo of a P-256 key: the fixed prefix, then the point.
    let mut es_spki = hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    es_spki.extend_from_slice(es_pair.public_key().as_ref());
    let ed = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed_pair = signature::Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap();
    let mut ed_spki = hex("302a300506032b6570032100");
    ed_spki.extend_from_slice(ed_pair.public_key().as_ref());
    // A P-521 scalar below the group order (its first byte is at most 1), random otherwise.
    let mut scalar = [0u8; 66];
    ring::rand::SecureRandom::fill(&rng, &mut scalar[1..]).unwrap();
    scalar[0] = 1;
    scalar[1] &= 0x7f;
    let p521 = p521::ecdsa::SigningKey::from_slice(&scalar).unwrap();
    // SubjectPublicKeyInfo of a P-521 key: the fixed prefix, then the uncompressed point.
    let mut p521_spki = hex("30819b301006072a8648ce3d020106052b8104002303818600");
    let public = p521::ecdsa::VerifyingKey::from(&p521);
    p521_spki.extend_from_slice(public.to_encoded_point(false).as_bytes());
    Keys {
        es: (es.as_ref().to_vec(), pem(&es_spki)),
        ed: (ed.as_ref().to_vec(), pem(&ed_spki)),
        p521: (scalar.to_vec(), pem(&p521_spki)),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A token of `claims` signed with `alg`: `key` is the HMAC secret or the pkcs8 key.
fn token(alg: &str, claims: Value, key: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        b64(json!({ "alg": alg, "typ": "JWT" }).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let rng = SystemRandom::new();
    let sig = match alg {
        "HS256" | "HS384" => {
            let a = if alg == "HS256" {
                ring::hmac::HMAC_SHA256
            } else {
                ring::hmac::HMAC_SHA384
            };
            ring::hmac::sign(&ring::hmac::Key::new(a, key), signed.as_bytes())
                .as_ref()
                .to_vec()
        }
        "ES256" => signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, key, &rng)
            .unwrap()
            .sign(&rng, signed.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec(),
        "ES512" => {
            use p521::ecdsa::signature::Signer;
            let signing = p521::ecdsa::SigningKey::from_slice(key).unwrap();
            let sig: p521::ecdsa::Signature = signing.sign(signed.as_bytes());
            sig.to_bytes().to_vec()
        }
        _ => signature::Ed25519KeyPair::from_pkcs8(key)
            .unwrap()
            .sign(signed.as_bytes())
            .as_ref()
            .to_vec(),
    };
    format!("{signed}.{}", b64(&sig))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn setup(bp: &Blueprint, keys: &Keys) {
    let bob = bp.consumers().insert(json!({ "username": "bob" })).await;
    bp.consumers().insert(json!({ "username": "guest" })).await;
    let jwts = bp.table("jwt_secrets");
    jwts.insert(json!({ "key": "hs-key", "secret": "hs-secret", "consumer": { "id": bob["id"] } }))
        .await;
    jwts.insert(
        json!({ "key": "es-key", "algorithm": "ES256", "rsa_public_key": keys.es.1, "consumer": { "id": bob["id"] } }),
    )
    .await;
    jwts.insert(
        json!({ "key": "ed-key", "algorithm": "EdDSA", "rsa_public_key": keys.ed.1, "consumer": { "id": bob["id"] } }),
    )
    .await;
    jwts.insert(
        json!({ "key": "p521-key", "algorithm": "ES512", "rsa_public_key": keys.p521.1, "consumer": { "id": bob["id"] } }),
    )
    .await;
    for (path, config) in [
        ("/jwt", json!({ "cookie_names": ["token"] })),
        (
            "/exp",
            json!({ "claims_to_verify": ["exp"], "maximum_expiration": 3600 }),
        ),
        ("/anon", json!({ "anonymous": "guest", "realm": "api" })),
    ] {
        let route = bp.routes().insert(json!({ "paths": [path] })).await;
        bp.plugins()
            .insert(json!({ "name": Jwt::NAME, "route": { "id": route["id"] }, "config": config }))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_as_kong_does() {
    assert_eq!((Jwt::NAME, Jwt::PRIORITY), ("jwt", 1450));
    let keys = keys();
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        setup(&bp, &keys).await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();
        let bearer = |t: &str| format!("Bearer {t}");
        let hs = token("HS256", json!({ "iss": "hs-key" }), b"hs-secret");

        let res = proxy.get("/jwt/request").send().await;
        res.assert_status(401);
        assert_eq!(res.assert_json(), json!({ "message": "Unauthorized" }));
        assert_eq!(res.assert_header("WWW-Authenticate"), "Bearer");
        for (sent, answer) in [
            ("a.b.c".to_owned(), "Bad token; invalid JSON"),
            (
                token("HS256", json!({ "sub": "x" }), b"hs-secret"),
                "No mandatory 'iss' in claims",
            ),
            (
                token("HS256", json!({ "iss": "" }), b"hs-secret"),
                "Invalid 'iss' in claims",
            ),
            (
                token("HS256", json!({ "iss": "nobody" }), b"hs-secret"),
                "No credentials found for given 'iss'",
            ),
            (
                token("HS384", json!({ "iss": "hs-key" }), b"hs-secret"),
                "Invalid algorithm",
            ),
            (
                token("HS256", json!({ "iss": "hs-key" }), b"wrong"),
                "Invalid signature",
            ),
        ] {
            let res = proxy
                .get("/jwt/request")
                .header("Authorization", &bearer(&sent))
                .send()
                .await;
            res.assert_status(401);
            assert_eq!(res.assert_json()["message"], answer, "[#{strategy}] {sent}");
            assert_eq!(res.assert_header("WWW-Authenticate"), "Bearer error=\"invalid_token\"");
        }

        // In a header, a query argument or a cookie.
        for res in [
            proxy
                .get("/jwt/request")
                .header("Authorization", &bearer(&hs))
                .send()
                .await,
            proxy.get(&format!("/jwt/request?jwt={hs}")).send().await,
            proxy
                .get("/jwt/request")
                .header("Cookie", &format!("a=b; token={hs}"))
                .send()
                .await,
        ] {
            res.assert_status(200);
            let upstream = res.request();
            assert_eq!(
                upstream.header("x-consumer-username").as_deref(),
                Some("bob"),
                "[#{strategy}]"
            );
            assert_eq!(upstream.header("x-credential-identifier").as_deref(), Some("hs-key"));
        }
        let other = token("HS256", json!({ "iss": "hs-key", "n": 1 }), b"hs-secret");
        let res = proxy
            .get(&format!("/jwt/request?jwt={other}"))
            .header("Authorization", &bearer(&hs))
            .send()
            .await;
        res.assert_status(401);
        assert_eq!(res.assert_json()["message"], "Multiple tokens provided");

        // Public keys: ES256, ES512, EdDSA.
        let with = |path: &'static str, t: String| proxy.get(path).header("Authorization", &bearer(&t)).send();
        with("/jwt/request", token("ES256", json!({ "iss": "es-key" }), &keys.es.0))
            .await
            .assert_status(200);
        with("/jwt/request", token("EdDSA", json!({ "iss": "ed-key" }), &keys.ed.0))
            .await
            .assert_status(200);
        with(
            "/jwt/request",
            token("ES512", json!({ "iss": "p521-key" }), &keys.p521.0),
        )
        .await
        .assert_status(200);
        // Signed with keys no credential has: refused.
        let stranger = crate::keys();
        for sent in [
            token("ES256", json!({ "iss": "es-key" }), &stranger.es.0),
            token("EdDSA", json!({ "iss": "ed-key" }), &stranger.ed.0),
            token("ES512", json!({ "iss": "p521-key" }), &stranger.p521.0),
        ] {
            let res = with("/jwt/request", sent).await;
            res.assert_status(401);
            assert_eq!(res.assert_json()["message"], "Invalid signature");
        }

        // Registered claims and the maximum expiration.
        let t = now();
        for (claims, errors) in [
            (
                json!({ "iss": "hs-key", "exp": t - 10 }),
                json!({ "exp": "token expired" }),
            ),
            (json!({ "iss": "hs-key" }), json!({ "exp": "must be a number" })),
            (
                json!({ "iss": "hs-key", "exp": t + 7200 }),
                json!({ "exp": "exceeds maximum allowed expiration" }),
            ),
        ] {
            let res = with("/exp/request", token("HS256", claims, b"hs-secret")).await;
            res.assert_status(401);
            assert_eq!(res.assert_json(), errors, "[#{strategy}]");
        }
        let fresh = token("HS256", json!({ "iss": "hs-key", "exp": t + 600 }), b"hs-secret");
        with("/exp/request", fresh).await.assert_status(200);

        let res = proxy.get("/anon/request").send().await;
        res.assert_status(200);
        assert_eq!(res.request().header("x-consumer-username").as_deref(), Some("guest"));
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_credentials_need_a_public_key_that_parses() {
    for strategy in helpers::all_strategies().into_iter().filter(|s| *s != Strategy::Off) {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        bp.consumers().insert(json!({ "username": "bob" })).await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let admin = kong.admin_client();
        let res = admin
            .post("/consumers/bob/jwt")
            .json(&json!({ "algorithm": "RS256" }))
            .send()
            .await;
        res.assert_status(400);
        assert_eq!(
            res.assert_json()["fields"]["@entity"],
            json!(["rsa_public_key: required field missing"])
        );
        let res = admin
            .post("/consumers/bob/jwt")
            .json(&json!({ "algorithm": "ES256", "rsa_public_key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----" }))
            .send()
            .await;
        res.assert_status(400);
        assert_eq!(
            res.assert_json()["fields"]["@entity"],
            json!(["rsa_public_key: invalid key"])
        );
        // HS256 by default, with a generated key and secret.
        let res = admin.post("/consumers/bob/jwt").json(&json!({})).send().await;
        res.assert_status(201);
        let made: Value = res.assert_json();
        assert_eq!(made["algorithm"], "HS256");
        assert!(made["key"].as_str().is_some_and(|k| !k.is_empty()));
        assert!(made["secret"].as_str().is_some_and(|s| !s.is_empty()));
        kong.stop().await;
    }
}
