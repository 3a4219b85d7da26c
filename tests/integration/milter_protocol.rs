//! The milter protocol at the byte level, where a client library would
//! hide what is under test: an MTA that offers protocol 6's "no reply"
//! steps (as Postfix does) is asked not to wait for the ones cordon only
//! answers with "continue", and then gets no reply to them: the first
//! thing it reads after option negotiation is the end-of-message answer.

use std::sync::Arc;

use cordon::milter::run_session;
use cordon::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::common::*;

/// SMFIP_NR_* bits (milter protocol 6).
const NR_CONN: u32 = 0x1000;
const NR_HELO: u32 = 0x2000;
const NR_MAIL: u32 = 0x4000;
const NR_RCPT: u32 = 0x8000;
const NR_EOH: u32 = 0x4_0000;
const NR_HDR: u32 = 0x80;
const NR_BODY: u32 = 0x8_0000;
/// SMFIP_NODATA: the MTA does not send DATA.
const NO_DATA: u32 = 0x200;
/// SMFIP_NOCONNECT: cordon needs the connect step.
const NO_CONNECT: u32 = 0x1;

fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(cmd);
    p.extend_from_slice(data);
    p
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    r.read_exact(&mut body).await.ok()?;
    let (code, rest) = body.split_first()?;
    Some((*code, rest.to_vec()))
}

/// Offers `protocol` and sends one whole EICAR message without waiting;
/// returns the protocol cordon agreed to and the frames it sent after
/// option negotiation, up to its final answer.
async fn conversation(registry: &Arc<Registry>, protocol: u32) -> (u32, Vec<(u8, Vec<u8>)>) {
    conversation_with(
        registry,
        protocol,
        b"<a@outside.test>\0",
        b"<dave@in.test>\0",
    )
    .await
}

/// [`conversation`] with the MAIL and RCPT packets' data as given.
async fn conversation_with(
    registry: &Arc<Registry>,
    protocol: u32,
    mail: &[u8],
    rcpt: &[u8],
) -> (u32, Vec<(u8, Vec<u8>)>) {
    let (mut mta, milter) = tokio::io::duplex(1 << 16);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(run_session(milter, "raw", registry.clone(), stop_rx));
    let optneg = [6u32, 0x1ff, protocol]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect::<Vec<_>>();
    mta.write_all(&packet(b'O', &optneg)).await.unwrap();
    let (code, reply) = read_frame(&mut mta)
        .await
        .expect("an option negotiation reply");
    assert_eq!(code, b'O');
    let agreed = u32::from_be_bytes(reply[8..12].try_into().unwrap());
    let body = format!("{}\r\n", eicar());
    let message = [
        packet(b'C', b"client.test\x004\x9c\x40192.0.2.10\0"),
        packet(b'H', b"client.test\0"),
        packet(b'M', mail),
        packet(b'R', rcpt),
        packet(b'L', b"From\0a@outside.test\0"),
        packet(b'L', b"Subject\0test\0"),
        packet(b'N', b""),
        packet(b'B', body.as_bytes()),
        packet(b'E', b""),
    ]
    .concat();
    // All of it at once, as an MTA that was told not to wait sends it.
    mta.write_all(&message).await.unwrap();
    // Up to the final answer (the message is refused: a reply code).
    let mut frames = Vec::new();
    while frames.len() < 64 {
        let (code, data) = read_frame(&mut mta).await.expect("cordon's answer");
        frames.push((code, data));
        if matches!(code, b'y' | b'r' | b't' | b'd' | b'a') {
            break;
        }
    }
    mta.write_all(&packet(b'Q', b"")).await.unwrap();
    server.await.expect("session task");
    let mut rest = Vec::new();
    mta.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "nothing after the answer: {rest:?}");
    (agreed, frames)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mta_offering_no_reply_steps_gets_only_the_end_of_message_answer() {
    let registry = Arc::new(
        Registry::load(
            &config_from_toml(&format!(
                "cache_dir = {}\n[engines.testsig]\ncomponent = {}\n",
                toml_path(&cache_dir()),
                toml_path(&component("testsig"))
            ))
            .registry,
        )
        .unwrap_or_else(|e| panic!("{e:#}")),
    );
    let offered =
        NR_CONN | NR_HELO | NR_MAIL | NR_RCPT | NR_EOH | NR_HDR | NR_BODY | NO_DATA | NO_CONNECT;
    let (agreed, frames) = conversation(&registry, offered).await;
    let want = NR_CONN | NR_HELO | NR_MAIL | NR_RCPT | NR_EOH | NR_HDR | NR_BODY | NO_DATA;
    assert_eq!(agreed, want, "agreed {agreed:#x}");
    assert_eq!(agreed & NO_CONNECT, 0, "cordon needs the connect step");
    let codes: Vec<char> = frames.iter().map(|(c, _)| *c as char).collect();
    assert_eq!(
        codes,
        vec!['y'],
        "only the end-of-message answer: {codes:?}"
    );
    let text = String::from_utf8_lossy(&frames[0].1);
    assert!(text.starts_with("550 5.7.1"), "{text}");
}

/// The contract says engines get bare addresses; the MTA sends SMTP paths
/// (angle brackets, a source route, ESMTP parameters as further fields).
#[tokio::test(flavor = "multi_thread")]
async fn engines_get_bare_envelope_addresses() {
    let registry = Arc::new(
        Registry::load(
            &config_from_toml(&format!(
                "cache_dir = {}\n[engines.hostile]\ncomponent = {}\nsettings.mode = \"envelope\"\n",
                toml_path(&cache_dir()),
                toml_path(&component("hostile"))
            ))
            .registry,
        )
        .unwrap_or_else(|e| panic!("{e:#}")),
    );
    let (_, frames) = conversation_with(
        &registry,
        0,
        b"<a@outside.test>\0SIZE=100\0BODY=8BITMIME\0",
        b"<@relay.test:dave@in.test>\0NOTIFY=NEVER\0",
    )
    .await;
    let (code, text) = frames.last().expect("an answer");
    assert_eq!(*code, b'y');
    let text = String::from_utf8_lossy(text);
    assert!(
        text.contains("Envelope.from[a@outside.test].to[dave@in.test]"),
        "{text}"
    );
}
