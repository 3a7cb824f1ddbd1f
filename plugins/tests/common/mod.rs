//! What several plugin tests share: an HTTP receiver standing in for a log or telemetry
//! collector.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kong_pdk::testing::helpers;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A request the receiver got: its request line, headers (lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Received {
    pub line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP/1.1 receiver on a random port: answers each request with the next of `statuses`
/// (then 200), and records them.
pub async fn receiver(statuses: Vec<u16>) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(statuses.into_iter()));
    let recorded = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (recorded, statuses) = (recorded.clone(), statuses.clone());
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        read.read_line(&mut h).await.unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (n, v) = h.split_once(':').unwrap();
                        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                    let len: usize = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    let mut body = vec![0; len];
                    read.read_exact(&mut body).await.unwrap();
                    recorded.lock().unwrap().push(Received {
                        line: line.trim_end().to_owned(),
                        headers,
                        body,
                    });
                    let status = statuses.lock().unwrap().next().unwrap_or(200);
                    let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 4\r\n\r\nnope");
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, got)
}

/// The receiver's requests once it has at least `n`.
pub async fn wait_for(got: &Arc<Mutex<Vec<Received>>>, n: usize) -> Vec<Received> {
    helpers::wait_until("the receiver's requests", Duration::from_secs(10), || async {
        got.lock().unwrap().len() >= n
    })
    .await;
    got.lock().unwrap().clone()
}
