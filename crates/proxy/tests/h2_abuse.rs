//! HTTP/2 clients that attack the proxy frame by frame are cut off, while another client keeps
//! being served.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use support::*;
use tokio::{io::AsyncWriteExt, net::TcpStream};

const SECOND: Duration = Duration::from_secs(1);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A GET's header block: `:method GET`, `:scheme http`, `:path /` (HPACK static table) and
/// `:authority app` (a literal).
const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x01, 0x03, b'a', b'p', b'p'];

/// The error code of the first GOAWAY among `frames`, if any.
fn goaway(mut frames: &[u8]) -> Option<u32> {
    while frames.len() >= 9 {
        let len = u32::from_be_bytes([0, frames[0], frames[1], frames[2]]) as usize;
        let payload = frames.get(9..9 + len)?;
        if frames[3] == GOAWAY && len >= 8 {
            return Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
        }
        frames = &frames[9 + len..];
    }
    None
}

/// Another client sending requests one after another until stopped: the statuses it got.
fn bystander(proxy: &Proxy, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<u16>> {
    let (inbound, stop) = (proxy.inbound, Arc::clone(stop));
    tokio::spawn(async move {
        let client = H2::connect(inbound).await;
        let mut statuses = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            statuses.push(client.status("/").await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        statuses
    })
}

/// CVE-2023-44487: streams opened and reset at once, as fast as the client can write them. The
/// proxy answers with GOAWAY (ENHANCE_YOUR_CALM) and closes; another client is served throughout.
#[tokio::test]
async fn a_rapid_reset_client_is_cut_off_while_another_is_served() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let other = bystander(&proxy, &stop);
    eventually("the other client to be served", 5 * SECOND, async || (upstream.received() > 0).then_some(()))
        .await;

    let (mut read, mut write) = TcpStream::connect(proxy.inbound).await.unwrap().into_split();
    let mut attack = PREFACE.to_vec();
    attack.extend(h2_frame(SETTINGS, 0, 0, &[]));
    const STREAMS: u32 = 10_000;
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        attack.extend(h2_frame(HEADERS, END_STREAM | END_HEADERS, id, GET_BLOCK));
        attack.extend(h2_frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    // The proxy may close before it has read it all: a failed write is the point.
    let writer = tokio::spawn(async move { write.write_all(&attack).await });
    let (frames, closed) = read_until_closed(&mut read, 10 * SECOND).await;
    let _ = writer.await;
    assert!(closed, "the attacking connection is closed");
    assert_eq!(goaway(&frames), Some(ENHANCE_YOUR_CALM), "GOAWAY says why");

    stop.store(true, Ordering::SeqCst);
    let statuses = other.await.unwrap();
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Every request of the other client's reached the app; the rest came from the attack.
    let app = upstream.received().saturating_sub(statuses.len());
    eprintln!("{STREAMS} streams opened and reset: {app} requests reached the app before the GOAWAY");
    assert!(app < STREAMS as usize / 10, "{app} of {STREAMS} reset streams reached the app");
}

/// CVE-2024-27316 and kin: a HEADERS frame without END_HEADERS, then CONTINUATION frames that
/// never end the header block. The proxy sends GOAWAY and closes after a handful, rather than
/// buffering them; another client is served throughout.
#[tokio::test]
async fn a_continuation_flood_is_cut_off_while_another_client_is_served() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let other = bystander(&proxy, &stop);

    let (mut read, mut write) = TcpStream::connect(proxy.inbound).await.unwrap().into_split();
    let mut start = PREFACE.to_vec();
    start.extend(h2_frame(SETTINGS, 0, 0, &[]));
    start.extend(h2_frame(HEADERS, END_STREAM, 1, GET_BLOCK));
    write.write_all(&start).await.unwrap();
    // Ten empty CONTINUATION frames at a time, each batch given a moment to be answered.
    let batch: Vec<u8> = (0..10).flat_map(|_| h2_frame(CONTINUATION, 0, 1, &[])).collect();
    let mut sent = 0;
    let mut frames = Vec::new();
    let mut closed = false;
    while sent < 5_000 && !closed {
        if write.write_all(&batch).await.is_err() {
            closed = true;
            break;
        }
        sent += 10;
        let (more, ended) = read_until_closed(&mut read, Duration::from_millis(5)).await;
        frames.extend(more);
        closed = ended || goaway(&frames).is_some();
    }
    if !closed || goaway(&frames).is_none() {
        let (more, ended) = read_until_closed(&mut read, 2 * SECOND).await;
        frames.extend(more);
        closed |= ended;
    }
    assert!(closed, "the flooding connection is cut off (after {sent} CONTINUATION frames)");
    assert_eq!(goaway(&frames), Some(ENHANCE_YOUR_CALM), "GOAWAY says why");
    eprintln!("CONTINUATION flood: cut off after {sent} frames sent");
    assert!(sent <= 100, "cut off only after {sent} CONTINUATION frames");

    stop.store(true, Ordering::SeqCst);
    let statuses = other.await.unwrap();
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == 200), "{statuses:?}");
}
