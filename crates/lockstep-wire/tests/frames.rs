//! Frames round-trip whatever the pieces they arrive in, and garbage is refused with a reason,
//! never a panic.

use lockstep_core::{Message, MessageBody, NodeId, Term};
use lockstep_wire::{decode, encode, Decoder, Kind, WireError, VERSION};
use proptest::prelude::*;

fn message(term: u64) -> Message {
    Message { from: NodeId(1), to: NodeId(2), term: Term(term), body: MessageBody::TimeoutNow }
}

#[test]
fn consensus_messages_round_trip() {
    let frame = encode(Kind::Peer, &message(7)).expect("encodes");
    let mut decoder = Decoder::new(1 << 20);
    decoder.extend(&frame);
    let (kind, body) = decoder.next_frame().expect("valid").expect("whole");
    assert_eq!(kind, Kind::Peer);
    assert_eq!(decode::<Message>(&body).expect("decodes"), message(7));
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn bad_frames_are_refused_with_reasons() {
    let good = encode(Kind::Client, &"hello").expect("encodes").to_vec();
    let refuse = |bytes: &[u8], max: u64| {
        let mut decoder = Decoder::new(max);
        decoder.extend(bytes);
        decoder.next_frame().expect_err("refused")
    };
    // A flipped bit in the body.
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(refuse(&flipped, 1 << 20), WireError::BadChecksum);
    // Another version.
    let mut version = good.clone();
    version[4] = VERSION + 1;
    assert!(refuse(&version, 1 << 20).to_string().contains("version"));
    // An unknown kind.
    let mut kind = good.clone();
    kind[5] = 99;
    assert_eq!(refuse(&kind, 1 << 20), WireError::UnknownKind(99));
    // Too large for this decoder, refused before the body arrives.
    assert!(matches!(refuse(&good[..4], 8), WireError::TooLarge { .. }));
    // Shorter than a header.
    assert!(matches!(refuse(&[1, 0, 0, 0, VERSION], 1 << 20), WireError::TooShort { .. }));
    // A body that is not what was expected.
    let number = encode(Kind::Client, &7u8).expect("encodes");
    let mut decoder = Decoder::new(1 << 20);
    decoder.extend(&number);
    let (_, body) = decoder.next_frame().expect("valid").expect("whole");
    assert!(matches!(decode::<Message>(&body), Err(WireError::Undecodable(_))));
}

proptest! {
    /// Frames cut at any points come out whole and in order.
    #[test]
    fn frames_survive_any_split(values in prop::collection::vec(any::<u64>(), 1..20), cuts in prop::collection::vec(1usize..40, 1..40)) {
        let stream: Vec<u8> = values
            .iter()
            .flat_map(|value| encode(Kind::Peer, &message(*value % 1000 + 1)).expect("encodes").to_vec())
            .collect();
        let mut decoder = Decoder::new(1 << 20);
        let mut decoded = Vec::new();
        let mut position = 0;
        for cut in cuts.iter().cycle() {
            if position >= stream.len() {
                break;
            }
            let end = (position + cut).min(stream.len());
            decoder.extend(&stream[position..end]);
            position = end;
            while let Some((_, body)) = decoder.next_frame().expect("valid") {
                decoded.push(decode::<Message>(&body).expect("decodes"));
            }
        }
        let expected: Vec<Message> = values.iter().map(|value| message(*value % 1000 + 1)).collect();
        prop_assert_eq!(decoded, expected);
    }

    /// Garbage never panics: it is either not yet a frame or an error.
    #[test]
    fn garbage_never_panics(garbage in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut decoder = Decoder::new(1 << 16);
        decoder.extend(&garbage);
        for _ in 0..10 {
            match decoder.next_frame() {
                Ok(Some((_, body))) => { let _ = decode::<Message>(&body); }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[test]
fn protocol_messages_round_trip_and_strangers_are_refused() {
    use lockstep_wire::protocol::{
        ClientError, ClientMessage, PeerHello, PeerStream, ReadConsistency, ServerMessage,
    };
    let hello = PeerHello { cluster_id: 9, from: 1, to: 2, stream: PeerStream::Snapshots };
    let frame = encode(Kind::Hello, &hello).expect("encodes");
    let mut decoder = Decoder::new(1 << 20);
    decoder.extend(&frame);
    let (kind, body) = decoder.next_frame().expect("valid").expect("whole");
    assert_eq!(kind, Kind::Hello);
    assert_eq!(decode::<PeerHello>(&body).expect("decodes"), hello);

    type Request = ClientMessage<(String, u64), String>;
    let requests: Vec<Request> = vec![
        ClientMessage::Write { id: 1, client: 7, sequence: 3, input: ("deposit".into(), 5) },
        ClientMessage::Read { id: 2, query: "alice".into(), consistency: ReadConsistency::Lease },
        ClientMessage::Status { id: 3, digest: true },
    ];
    for request in requests {
        let frame = encode(Kind::Client, &request).expect("encodes");
        let mut decoder = Decoder::new(1 << 20);
        decoder.extend(&frame);
        let (_, body) = decoder.next_frame().expect("valid").expect("whole");
        assert_eq!(decode::<Request>(&body).expect("decodes"), request);
    }
    let answer: ServerMessage<u64> = ServerMessage::Refused {
        id: 4,
        error: ClientError::NotLeader { leader: Some(2), address: Some("127.0.0.1:7002".into()) },
    };
    let frame = encode(Kind::Client, &answer).expect("encodes");
    let mut decoder = Decoder::new(1 << 20);
    decoder.extend(&frame);
    let (_, body) = decoder.next_frame().expect("valid").expect("whole");
    let back: ServerMessage<u64> = decode(&body).expect("decodes");
    assert_eq!(back.id(), 4);
    assert_eq!(back, answer);
    // A client message where a peer hello is expected does not decode as one.
    let stranger = encode(Kind::Hello, &ClientMessage::<u8, u8>::Status { id: 1, digest: false })
        .expect("encodes");
    let mut decoder = Decoder::new(1 << 20);
    decoder.extend(&stranger);
    let (_, body) = decoder.next_frame().expect("valid").expect("whole");
    assert!(decode::<PeerHello>(&body).is_err());
}
