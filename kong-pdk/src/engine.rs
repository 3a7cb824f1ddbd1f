//! The engine behind the PDK's runtime services (with the `gateway` feature): Redis
//! connections ([`crate::redis`]) and timers ([`crate::timer`]), on tokio. Every node's
//! [`NodeInfo`](crate::pdk::NodeInfo) has them by default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::redis::{RedisClient, RedisCommand, RedisFuture, RedisReply, RedisSettings};
use crate::timer::{Task, Timers};

/// Connections kept at most; beyond, they are all dropped and made again as needed.
const MAX_CONNECTIONS: usize = 64;

/// One multiplexed, reconnecting connection per server, login and database.
#[derive(Default)]
pub(crate) struct RedisPool {
    connections: Mutex<HashMap<RedisSettings, ConnectionManager>>,
}

impl RedisPool {
    /// The connection for `server`, made lazily (connecting happens with the first command).
    fn connection(&self, server: &RedisSettings) -> Result<ConnectionManager, String> {
        let mut map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(server) {
            return Ok(c.clone());
        }
        let addr = if server.ssl {
            ConnectionAddr::TcpTls {
                host: server.host.clone(),
                port: server.port,
                insecure: !server.ssl_verify,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(server.host.clone(), server.port)
        };
        let mut login = RedisConnectionInfo::default()
            .set_db(server.database)
            .set_skip_set_lib_name();
        // AUTH only with a password (Kong's `is_present`), with the user name when one is set.
        if let Some(password) = server.password.as_deref().filter(|p| !p.is_empty()) {
            login = login.set_password(password);
            if let Some(user) = server.username.as_deref().filter(|u| !u.is_empty()) {
                login = login.set_username(user);
            }
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| e.to_string())?
            .set_redis_settings(login);
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let timeout = server.timeout.max(Duration::from_millis(1));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        if map.len() >= MAX_CONNECTIONS {
            map.clear();
        }
        map.insert(server.clone(), manager.clone());
        Ok(manager)
    }
}

fn reply(v: redis::Value) -> RedisReply {
    match v {
        redis::Value::Nil => RedisReply::Nil,
        redis::Value::Int(n) => RedisReply::Int(n),
        redis::Value::BulkString(d) => RedisReply::Data(d),
        redis::Value::SimpleString(s) => RedisReply::Status(s),
        redis::Value::Okay => RedisReply::Status("OK".into()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            RedisReply::Array(items.into_iter().map(reply).collect())
        }
        other => RedisReply::Status(format!("{other:?}")),
    }
}

impl RedisClient for RedisPool {
    fn pipeline<'a>(&'a self, server: &'a RedisSettings, commands: Vec<RedisCommand>) -> RedisFuture<'a> {
        Box::pin(async move {
            let mut conn = self.connection(server)?;
            let mut pipe = redis::pipe();
            for RedisCommand(parts) in &commands {
                let Some((name, args)) = parts.split_first() else {
                    return Err("an empty Redis command".into());
                };
                let cmd = pipe.cmd(std::str::from_utf8(name).map_err(|e| e.to_string())?);
                for arg in args {
                    cmd.arg(arg.as_slice());
                }
            }
            let timeout = server.timeout.max(Duration::from_millis(1));
            let values = tokio::time::timeout(timeout, pipe.query_async::<Vec<redis::Value>>(&mut conn))
                .await
                .map_err(|_| "timeout".to_owned())?
                .map_err(|e| e.to_string())?;
            Ok(values.into_iter().map(reply).collect())
        })
    }
}

/// Timers on the tokio runtime the gateway runs on.
#[derive(Default)]
pub(crate) struct TokioTimers;

impl Timers for TokioTimers {
    fn at(&self, delay: Duration, task: Task) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            task.await;
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_server_is_an_error() {
        // A port nothing listens on: refused at once, or timed out.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut server = RedisSettings::new("127.0.0.1", port);
        server.timeout = Duration::from_millis(300);
        let pool = RedisPool::default();
        let err = pool
            .pipeline(&server, vec![RedisCommand::new("PING")])
            .await
            .unwrap_err();
        assert!(!err.is_empty());
    }

    #[tokio::test]
    async fn timers_run_their_task_after_the_delay() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(TokioTimers.at(
            Duration::from_millis(10),
            Box::pin(async move {
                let _ = tx.send(());
            })
        ));
        tokio::time::timeout(Duration::from_secs(5), rx).await.unwrap().unwrap();
    }
}
