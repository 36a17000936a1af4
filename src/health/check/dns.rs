//! DNS_CHECK (keepalived/check/check_dns.c).
//!
//! As keepalived: one UDP query, recursion desired, a random id, one question `name`
//! (default the root) of `type` (default SOA; keepalived knows A, NS, CNAME, SOA, MX, TXT,
//! AAAA, RRSIG, DNSKEY and ignores other types at load, keeping SOA), class IN. Replies
//! shorter than a header, with another id or that are not responses are ignored and the
//! wait goes on; the first matching response decides: RCODE 0 (NOERROR) is up, whatever
//! the answer count, any other RCODE is down. A receive error (ICMP port unreachable:
//! nothing listens) or no reply within connect_timeout is down.

use super::{bound_socket, io_msg, step, target, Outcome, UP};
use crate::kconf::{Checker, DnsCheck};
use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::time::Instant;

/// check_dns.c `DNS_TYPE`: the types keepalived accepts; anything else keeps SOA.
pub(crate) fn query_type(s: &str) -> RecordType {
    match s.to_ascii_uppercase().as_str() {
        "A" => RecordType::A,
        "NS" => RecordType::NS,
        "CNAME" => RecordType::CNAME,
        "MX" => RecordType::MX,
        "TXT" => RecordType::TXT,
        "AAAA" => RecordType::AAAA,
        "RRSIG" => RecordType::RRSIG,
        "DNSKEY" => RecordType::DNSKEY,
        _ => RecordType::SOA,
    }
}

/// The query keepalived's `dns_make_query` sends, built with hickory.
pub(crate) fn make_query(d: &DnsCheck, id: u16) -> Result<Vec<u8>, String> {
    let name = match d.name.as_str() {
        "" | "." => Name::root(),
        n => {
            let mut name = Name::from_ascii(n).map_err(|e| format!("DNS name {n:?}: {e}"))?;
            name.set_fqdn(true);
            name
        }
    };
    let mut q = Query::query(name, query_type(&d.qtype));
    q.set_query_class(DNSClass::IN);
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(q);
    m.to_vec().map_err(|e| format!("DNS query: {e}"))
}

/// What one received datagram means (check_dns.c `dns_recv_thread`): `None` to keep
/// waiting, else the verdict. Only the header is read, as keepalived does.
pub(crate) fn interpret(reply: &[u8], id: u16) -> Option<Result<(), String>> {
    if reply.len() < Header::len() {
        return None;
    }
    let h = Header::read(&mut BinDecoder::new(reply)).ok()?;
    if h.id() != id || h.message_type() != MessageType::Response {
        return None;
    }
    match h.response_code() {
        ResponseCode::NoError => Some(Ok(())),
        rc => Some(Err(format!("DNS rcode {} ({rc})", u16::from(rc)))),
    }
}

pub(super) async fn check(c: &Checker, d: &DnsCheck, deadline: Instant) -> Outcome {
    match probe(c, d, deadline).await {
        Ok(()) => UP,
        Err(e) => Outcome::Down(e),
    }
}

async fn probe(c: &Checker, d: &DnsCheck, deadline: Instant) -> Result<(), String> {
    let id: u16 = rand::random();
    let query = make_query(d, id)?;
    let s = bound_socket(c, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let sock = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))
        .map_err(|e| format!("socket: {}", io_msg(&e)))?;
    sock.connect(target(c))
        .await
        .map_err(|e| format!("connect: {}", io_msg(&e)))?;
    match sock.send(&query).await {
        Ok(n) if n == query.len() => {}
        Ok(_) => return Err("send: short write".into()),
        Err(e) => return Err(format!("send: {}", io_msg(&e))),
    }
    step(deadline, c.timing.connect_timeout, "DNS reply", async {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = sock
                .recv(&mut buf)
                .await
                .map_err(|e| format!("recv: {}", io_msg(&e)))?;
            if let Some(v) = interpret(&buf[..n], id) {
                return v;
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: u16, kind: MessageType, rc: ResponseCode) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id).set_message_type(kind).set_response_code(rc);
        m.to_vec().unwrap()
    }

    #[test]
    fn query_is_what_keepalived_sends() {
        let d = DnsCheck {
            qtype: "a".into(),
            name: "www.example.com".into(),
        };
        let q = make_query(&d, 0x1234).unwrap();
        let m = Message::from_vec(&q).unwrap();
        assert_eq!(m.id(), 0x1234);
        assert!(m.recursion_desired());
        assert_eq!(m.message_type(), MessageType::Query);
        assert_eq!(m.queries().len(), 1);
        assert_eq!(m.queries()[0].query_type(), RecordType::A);
        assert_eq!(m.queries()[0].query_class(), DNSClass::IN);
        assert_eq!(m.queries()[0].name().to_ascii(), "www.example.com.");
        // The default: SOA of the root, 12 + 1 + 2 + 2 bytes.
        let d = DnsCheck {
            qtype: "SOA".into(),
            name: ".".into(),
        };
        let q = make_query(&d, 1).unwrap();
        assert_eq!(q.len(), 17);
        assert_eq!(&q[12..], &[0, 0, 6, 0, 1]);
        assert_eq!(query_type("bogus"), RecordType::SOA);
    }

    #[test]
    fn answers() {
        assert_eq!(
            interpret(&reply(7, MessageType::Response, ResponseCode::NoError), 7),
            Some(Ok(()))
        );
        let nx = interpret(&reply(7, MessageType::Response, ResponseCode::NXDomain), 7);
        assert!(nx.unwrap().unwrap_err().starts_with("DNS rcode 3"));
        assert!(
            interpret(&reply(7, MessageType::Response, ResponseCode::ServFail), 7)
                .unwrap()
                .is_err()
        );
        // Ignored: other id, a query, too short, garbage.
        assert_eq!(
            interpret(&reply(8, MessageType::Response, ResponseCode::NoError), 7),
            None
        );
        assert_eq!(
            interpret(&reply(7, MessageType::Query, ResponseCode::NoError), 7),
            None
        );
        assert_eq!(interpret(&[0, 7, 0x80], 7), None);
        // A response header followed by garbage still counts: keepalived reads the header.
        let mut r = reply(7, MessageType::Response, ResponseCode::NoError);
        r.truncate(12);
        r.extend_from_slice(&[0xff; 9]);
        assert_eq!(interpret(&r, 7), Some(Ok(())));
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_datagram_is_harmless(data in proptest::collection::vec(any::<u8>(), 0..64), id in any::<u16>()) {
            let _ = interpret(&data, id);
        }
    }
}
