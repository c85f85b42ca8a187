//! The cluster store: what nethook needs from etcd, behind a trait (range, put, create-if-absent
//! in a transaction, delete, leases, watches), and its implementation on etcd's v3 JSON gateway
//! (`POST /v3/...`, keys and values base64). Short timeouts everywhere; every error names the
//! etcd URLs tried.

use super::http::{b64, unb64, Endpoint};
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One key and its value as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    Delete(String),
}

/// What a watch calls with each batch of events and the revision they bring the caller to.
pub type WatchFn<'a> = dyn FnMut(Vec<Event>, i64) -> bool + 'a;

pub trait ClusterStore: Send + Sync {
    /// Every key under `prefix`, and the store's revision at that moment.
    fn range(&self, prefix: &str) -> Result<(Vec<Kv>, i64)>;
    fn get(&self, key: &str) -> Result<Option<Kv>>;
    /// Put `value` at `key`, attached to `lease` when given (the key goes when the lease does).
    fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<()>;
    /// Create `key` only if it does not exist (one transaction); false: it existed.
    fn create(&self, key: &str, value: &[u8]) -> Result<bool>;
    fn delete(&self, key: &str) -> Result<()>;
    /// A new lease of `ttl` seconds.
    fn grant(&self, ttl: u64) -> Result<i64>;
    /// Refresh a lease; false: it has expired (grant a new one and put the keys again).
    fn keepalive(&self, lease: i64) -> Result<bool>;
    /// Watch every key under `prefix` from revision `from`; calls `f` with each batch of
    /// events and the revision they bring the caller to, until `f` returns false (Ok(true)),
    /// the store cancels the watch, e.g. because `from` was compacted away (Ok(false): list
    /// again), or the stream breaks (an error: watch again from the last revision seen).
    fn watch(&self, prefix: &str, from: i64, f: &mut WatchFn<'_>) -> Result<bool>;
    /// What to call the store in messages.
    fn describe(&self) -> String;
}

/// The end of the key range that holds every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// etcd through its v3 JSON gateway.
pub struct Etcd {
    endpoints: Vec<(String, Endpoint)>,
    /// The endpoint that answered last: tried first.
    good: AtomicUsize,
    timeout: Duration,
}

impl Etcd {
    pub fn new(urls: &[String], timeout: Duration) -> Result<Etcd> {
        let mut endpoints = Vec::new();
        for u in urls {
            let e = Endpoint::parse(u).map_err(|why| {
                Error::invalid(format!("etcd URL {u}"), why, "give http://HOST:2379")
            })?;
            endpoints.push((u.clone(), e));
        }
        if endpoints.is_empty() {
            return Err(Error::invalid(
                "cluster settings",
                "name no etcd URL",
                "run 'nethook cluster join --etcd URL --vtep-ip IP'",
            ));
        }
        Ok(Etcd {
            endpoints,
            good: AtomicUsize::new(0),
            timeout,
        })
    }

    fn urls(&self) -> String {
        self.endpoints
            .iter()
            .map(|(u, _)| u.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn unreachable(&self, why: String) -> Error {
        Error::invalid(
            format!("etcd at {}", self.urls()),
            why,
            "check that etcd runs and that this host reaches it",
        )
    }

    /// POST to the first endpoint that answers.
    fn call(&self, path: &str, body: Value) -> Result<Value> {
        let body = body.to_string();
        let n = self.endpoints.len();
        let start = self.good.load(Ordering::Relaxed);
        let mut errs = Vec::new();
        for i in 0..n {
            let at = (start + i) % n;
            let (url, ep) = &self.endpoints[at];
            match ep.post(path, body.as_bytes(), self.timeout) {
                Ok(bytes) => {
                    self.good.store(at, Ordering::Relaxed);
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        self.unreachable(format!("{url}{path} answered no JSON: {e}"))
                    });
                }
                Err(e) if n == 1 => errs.push(e),
                Err(e) => errs.push(format!("{url}: {e}")),
            }
        }
        Err(self.unreachable(errs.join("; ")))
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kv_from(v: &Value) -> Option<Kv> {
    let key = String::from_utf8(unb64(v.get("key")?.as_str()?).ok()?).ok()?;
    let value = match v.get("value").and_then(Value::as_str) {
        Some(s) => unb64(s).ok()?,
        None => Vec::new(),
    };
    Some(Kv {
        key,
        value,
        mod_revision: v.get("mod_revision").map(int).unwrap_or(0),
        lease: v.get("lease").map(int).unwrap_or(0),
    })
}

impl ClusterStore for Etcd {
    fn range(&self, prefix: &str) -> Result<(Vec<Kv>, i64)> {
        let r = self.call(
            "/v3/kv/range",
            json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))}),
        )?;
        let rev = r.pointer("/header/revision").map(int).unwrap_or(0);
        let kvs = r
            .get("kvs")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(kv_from).collect())
            .unwrap_or_default();
        Ok((kvs, rev))
    }

    fn get(&self, key: &str) -> Result<Option<Kv>> {
        let r = self.call("/v3/kv/range", json!({"key": b64(key.as_bytes())}))?;
        Ok(r.get("kvs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(kv_from))
    }

    fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<()> {
        let mut req = json!({"key": b64(key.as_bytes()), "value": b64(value)});
        if let Some(l) = lease {
            req["lease"] = json!(l.to_string());
        }
        self.call("/v3/kv/put", req).map(|_| ())
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<bool> {
        let k = b64(key.as_bytes());
        let r = self.call(
            "/v3/kv/txn",
            json!({
                "compare": [{"target": "CREATE", "result": "EQUAL", "key": k, "create_revision": "0"}],
                "success": [{"request_put": {"key": k, "value": b64(value)}}],
            }),
        )?;
        Ok(r.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.call("/v3/kv/deleterange", json!({"key": b64(key.as_bytes())}))
            .map(|_| ())
    }

    fn grant(&self, ttl: u64) -> Result<i64> {
        let r = self.call("/v3/lease/grant", json!({"TTL": ttl.to_string()}))?;
        match r.get("ID").map(int) {
            Some(id) if id != 0 => Ok(id),
            _ => Err(self.unreachable(format!("granted no lease: {r}"))),
        }
    }

    fn keepalive(&self, lease: i64) -> Result<bool> {
        let r = self.call("/v3/lease/keepalive", json!({"ID": lease.to_string()}))?;
        Ok(r.pointer("/result/TTL").map(int).unwrap_or(0) > 0)
    }

    fn watch(&self, prefix: &str, from: i64, f: &mut WatchFn<'_>) -> Result<bool> {
        let at = self.good.load(Ordering::Relaxed) % self.endpoints.len();
        let (url, ep) = &self.endpoints[at];
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": from.to_string(),
        }})
        .to_string();
        // Each wait for data is bounded: a watch that went quiet for this long on a cut-off
        // host is dropped and the caller lists again (etcd sends nothing on an idle watch).
        let (body, _handle) = ep
            .stream(
                "/v3/watch",
                body.as_bytes(),
                self.timeout,
                Some(Duration::from_secs(30)),
            )
            .map_err(|e| {
                // The next try goes to another endpoint.
                self.good.store(at + 1, Ordering::Relaxed);
                self.unreachable(format!("{url}: watch: {e}"))
            })?;
        let stream = serde_json::Deserializer::from_reader(body).into_iter::<Value>();
        for msg in stream {
            let msg = msg.map_err(|e| self.unreachable(format!("{url}: watch ended: {e}")))?;
            let Some(res) = msg.get("result") else {
                return Err(self.unreachable(format!("{url}: watch failed: {msg}")));
            };
            if res
                .get("canceled")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                return Ok(false);
            }
            let events: Vec<Event> = res
                .get("events")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| {
                            let kv = kv_from(e.get("kv")?)?;
                            Some(match e.get("type").and_then(Value::as_str) {
                                Some("DELETE") => Event::Delete(kv.key),
                                _ => Event::Put(kv),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let rev = res.pointer("/header/revision").map(int).unwrap_or(0);
            if !events.is_empty() && !f(events, rev) {
                return Ok(true);
            }
        }
        Err(self.unreachable(format!("{url}: watch stream closed")))
    }

    fn describe(&self) -> String {
        format!("etcd at {}", self.urls())
    }
}
