//! The broker's own consume-and-commit ceiling, with its own client and
//! none of hookbridge's code: what a relay on NATS or Kafka is measured
//! against. The same message (an event's JSON) is published `messages`
//! times, then read back and acknowledged the way the relay acknowledges:
//! on NATS each message `double_ack`ed, 64 in flight; on Kafka offsets
//! stored per message and committed in rounds every 100 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;

use crate::Broker;

/// Messages/s read and acknowledged; `None` on the embedded bus (its
/// ceiling is the delivery path's).
pub async fn consume_and_commit(broker: &Broker, messages: usize) -> anyhow::Result<Option<f64>> {
    let payload = bytes::Bytes::from(crate::scale::template_json());
    match broker {
        Broker::Embedded => Ok(None),
        Broker::Nats(server) => nats(&server.url(), payload, messages).await.map(Some),
        Broker::Kafka(broker) => kafka(&broker.address(), payload, messages).await.map(Some),
    }
}

async fn nats(url: &str, payload: bytes::Bytes, messages: usize) -> anyhow::Result<f64> {
    use async_nats::jetstream::{self, consumer::AckPolicy};
    let js = jetstream::new(async_nats::connect(url).await?);
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "CEILING".into(),
            subjects: vec!["ceiling.>".into()],
            ..Default::default()
        })
        .await?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    for _ in 0..messages {
        let permit = in_flight.clone().acquire_owned().await?;
        let ack = js.publish("ceiling.email.sent", payload.clone()).await?;
        tokio::spawn(async move {
            ack.await.expect("a PubAck");
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(256).await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("ceiling".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut stream = consumer.messages().await?;
    let acking = Arc::new(tokio::sync::Semaphore::new(64));
    // Timed from the first message, as the relay's drain is.
    let mut started = None;
    for _ in 0..messages {
        let message = stream.next().await.context("the consumer ended")?.map_err(|e| anyhow::anyhow!("{e}"))?;
        started.get_or_insert_with(Instant::now);
        let permit = acking.clone().acquire_owned().await?;
        tokio::spawn(async move {
            message.double_ack().await.expect("acknowledged");
            drop(permit);
        });
    }
    let _ = acking.acquire_many(64).await?;
    Ok(messages as f64 / started.context("no message")?.elapsed().as_secs_f64())
}

async fn kafka(address: &str, payload: bytes::Bytes, messages: usize) -> anyhow::Result<f64> {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", address);
    let admin: AdminClient<_> = config.create()?;
    admin.create_topics(&[NewTopic::new("ceiling", 6, TopicReplication::Fixed(1))], &AdminOptions::new()).await?;
    let producer: FutureProducer = config.clone().set("enable.idempotence", "true").set("acks", "all").create()?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    for i in 0..messages {
        let permit = in_flight.clone().acquire_owned().await?;
        let (producer, payload) = (producer.clone(), payload.clone());
        tokio::spawn(async move {
            let key = i.to_string();
            producer
                .send(FutureRecord::to("ceiling").key(&key).payload(payload.as_ref()), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .expect("produced");
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(256).await?;
    let consumer: StreamConsumer = config
        .set("group.id", "ceiling")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&["ceiling"])?;
    let mut started = None;
    let mut committed = Instant::now();
    for _ in 0..messages {
        let message = consumer.recv().await?;
        started.get_or_insert_with(Instant::now);
        consumer.store_offset_from_message(&message)?;
        if committed.elapsed() >= Duration::from_millis(100) {
            consumer.commit_consumer_state(CommitMode::Async)?;
            committed = Instant::now();
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    Ok(messages as f64 / started.context("no message")?.elapsed().as_secs_f64())
}
