"""A Kafka-protocol cluster for tests: librdkafka's built-in mock cluster (confluent-kafka's
`test.mock.num.brokers`), written to by real confluent-kafka producers.

The mock cluster lives as long as the client that created it (`MockKafka._anchor`), so keep the
`MockKafka` object alive for the cluster's life. Its brokers listen on loopback ports; the test
learns them from client metadata. Topics are created on first produce (4 partitions each).
"""
import json

from confluent_kafka import Consumer, Producer, TopicPartition


class MockKafka:
    def __init__(self, brokers=3):
        self._anchor = Producer({"test.mock.num.brokers": brokers, "log_level": 3})
        md = self._anchor.list_topics(timeout=10)
        self.brokers = [f"{b.host}:{b.port}" for b in sorted(md.brokers.values(), key=lambda b: b.id)]
        assert len(self.brokers) == brokers, md.brokers
        self.bootstrap = ",".join(self.brokers)

    def producer(self, **conf):
        return Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "log_level": 3, **conf})

    def produce(self, topic, records, compression="none", partition=None, producer=None):
        """Sends (key, value) pairs (str/bytes/dict/None; dicts as JSON) and waits for every ack."""
        p = producer or self.producer(**{"compression.type": compression})
        errors = []

        def done(err, _msg):
            if err is not None:
                errors.append(err)

        for key, value in records:
            kwargs = {"key": encode(key), "value": encode(value), "on_delivery": done}
            if partition is not None:
                kwargs["partition"] = partition
            while True:
                try:
                    p.produce(topic, **kwargs)
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        left = p.flush(30)
        assert left == 0 and not errors, (left, errors)

    def partitions(self, topic):
        md = self._anchor.list_topics(topic, timeout=10)
        return sorted(md.topics[topic].partitions)

    def end_offsets(self, topic):
        """partition -> high watermark."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "offsets", "log_level": 3})
        try:
            out = {}
            for p in self.partitions(topic):
                _low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                out[p] = high
            return out
        finally:
            c.close()

    def settings(self):
        """`bootstrap_servers` for the plugin: every broker (the sandbox grants exactly these)."""
        return self.brokers


def encode(v):
    if v is None or isinstance(v, bytes):
        return v
    if isinstance(v, (dict, list, int, float, bool)):
        return json.dumps(v).encode()
    return str(v).encode()
