//! The two changes of the vendored rumqttc (vendor/rumqttc/SLIM-PATCH.md), held to what every
//! Slim daemon relies on.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, MqttState, Packet, PubAck, Publish, QoS, Request};
use slim_mqtt::EmbeddedBroker;

/// Hands `state` a QoS 1 publish of `payload`, as the event loop does; the packet to write, if
/// any.
fn send(state: &mut MqttState, payload: &[u8]) -> Option<Packet> {
    let publish = Publish::new("t", QoS::AtLeastOnce, payload.to_vec());
    state
        .handle_outgoing_packet(Request::Publish(publish))
        .unwrap()
}

/// A broker that acknowledges out of order frees a packet id before the one rumqttc would take
/// next: the next publish takes the free id instead of waiting for the busy one (upstream held
/// it back, and every request after it, for two keep-alives and a reconnect).
#[test]
fn a_publish_takes_a_free_packet_id_when_the_next_is_still_in_flight() {
    let mut state = MqttState::new(3, false);
    for payload in [b"a", b"b", b"c"] {
        send(&mut state, payload);
    }
    // Ids 1, 2 and 3 are in flight; the broker acknowledges 2 first. The next id in turn, 1,
    // is still in flight.
    state
        .handle_incoming_packet(rumqttc::Incoming::PubAck(PubAck::new(2)))
        .unwrap();
    match send(&mut state, b"d") {
        Some(Packet::Publish(p)) => assert_eq!((p.payload.as_ref(), p.pkid), (&b"d"[..], 2)),
        other => panic!("the publish goes out at once, got {other:?}"),
    }
    assert!(state.collision.is_none());
}

/// A publish held back because every packet id was in flight (a reconnect's replay can pass
/// the in-flight window) is sent again after the next reconnect, with a fresh id; upstream kept
/// it held, and on a clean session nothing ever released it, so that client's publishes (its
/// re-subscriptions too) stopped for good.
#[test]
fn a_collided_publish_is_sent_again_after_a_reconnect() {
    let mut state = MqttState::new(2, false);
    for payload in [b"a", b"b", b"c"] {
        send(&mut state, payload);
    }
    assert!(
        state.collision.is_some(),
        "the third publish finds no free id"
    );

    let pending = state.clean();
    let payloads: Vec<(Vec<u8>, u16)> = pending
        .iter()
        .map(|r| match r {
            Request::Publish(p) => (p.payload.to_vec(), p.pkid),
            other => panic!("only publishes were pending, got {other:?}"),
        })
        .collect();
    assert_eq!(
        payloads,
        vec![(b"a".to_vec(), 1), (b"b".to_vec(), 2), (b"c".to_vec(), 0)],
        "the unacknowledged publishes, then the held one with a fresh id"
    );
    assert!(state.collision.is_none());
}

/// Publishes queued faster than the event loop writes them go out together, and still arrive
/// all, once each, in order, through an in-flight window smaller than the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_publishes_arrive_all_in_order_through_a_small_window() {
    let broker = EmbeddedBroker::start_local().await.unwrap();
    let (host, port) = (
        "127.0.0.1",
        broker
            .url()
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap(),
    );

    let mut sub_options = MqttOptions::new("patch-sub", host, port);
    sub_options.set_keep_alive(Duration::from_secs(5));
    let (sub, mut sub_loop) = AsyncClient::new(sub_options, 64);
    sub.subscribe("patch/t", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
            break;
        }
    }

    const N: u32 = 2_000;
    let mut pub_options = MqttOptions::new("patch-pub", host, port);
    pub_options.set_inflight(8);
    let (client, mut pub_loop) = AsyncClient::new(pub_options, N as usize);
    // Everything is queued before the event loop first runs, so it takes them in batches.
    for i in 0..N {
        client
            .publish("patch/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    let publisher = tokio::spawn(async move {
        let mut acked = 0;
        while acked < N {
            if let Event::Incoming(Packet::PubAck(_)) = pub_loop.poll().await.unwrap() {
                acked += 1;
            }
        }
    });

    let mut received = Vec::with_capacity(N as usize);
    let collect = async {
        while received.len() < N as usize {
            if let Event::Incoming(Packet::Publish(p)) = sub_loop.poll().await.unwrap() {
                received.push(u32::from_be_bytes(p.payload[..4].try_into().unwrap()));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .expect("every publish arrives within 30 s");
    tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("every publish is acknowledged")
        .unwrap();
    assert_eq!(received, (0..N).collect::<Vec<_>>());
}
