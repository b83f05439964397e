//! Shared by the integration tests that watch a service over HTTP: a free
//! port, a bare `GET`, and a parser of the Prometheus text format.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port: status and body; `None` while nothing listens.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Every sample of `/metrics` by its full series (`name{labels}`, labels as
/// the exporter wrote them). Panics on a line that is not a comment or a
/// `series value` sample.
pub fn scrape_series(port: u16) -> Option<BTreeMap<String, f64>> {
    let (status, body) = get(port, "/metrics")?;
    assert_eq!(status, 200, "/metrics answered {status}");
    let mut out = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value in `{line}`"));
        out.insert(series.to_owned(), value);
    }
    Some(out)
}

/// [`scrape_series`] by metric name (labels dropped; for metrics with one
/// series per process).
pub fn scrape(port: u16) -> Option<BTreeMap<String, f64>> {
    Some(
        scrape_series(port)?
            .into_iter()
            .map(|(s, v)| (s.split('{').next().unwrap().to_owned(), v))
            .collect(),
    )
}
