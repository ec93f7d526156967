"""A Kafka-protocol cluster for tests: librdkafka's built-in mock cluster (`test.mock.num.brokers`),
written to by real confluent-kafka producers.

The cluster belongs to a librdkafka client handle made here through librdkafka's C API (the
copy bundled with confluent-kafka, loaded with ctypes), because that handle also gives the mock
cluster's controls: create a topic with N partitions, move a partition's leader, take a broker
down and up. The cluster lives as long as the `MockKafka` object: keep it alive. Its brokers
listen on loopback ports; the test learns them from client metadata. Topics not created
explicitly are created on first produce (4 partitions each).
"""
import ctypes
import glob
import json
import os

import confluent_kafka
from confluent_kafka import Consumer, Producer, TopicPartition


def _librdkafka():
    libs = os.path.join(os.path.dirname(confluent_kafka.__file__), os.pardir, "confluent_kafka.libs")
    path = sorted(glob.glob(os.path.join(libs, "librdkafka*.so*")))[0]
    lib = ctypes.CDLL(path)
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    for name, res, args in [
        ("rd_kafka_conf_new", vp, []),
        ("rd_kafka_conf_set", ctypes.c_int, [vp, cp, cp, cp, ctypes.c_size_t]),
        ("rd_kafka_new", vp, [ctypes.c_int, vp, cp, ctypes.c_size_t]),
        ("rd_kafka_destroy", None, [vp]),
        ("rd_kafka_handle_mock_cluster", vp, [vp]),
        ("rd_kafka_mock_cluster_bootstraps", cp, [vp]),
        ("rd_kafka_mock_topic_create", ctypes.c_int, [vp, cp, ctypes.c_int, ctypes.c_int]),
        ("rd_kafka_mock_partition_set_leader", ctypes.c_int, [vp, cp, ctypes.c_int32, ctypes.c_int32]),
        ("rd_kafka_mock_broker_set_down", ctypes.c_int, [vp, ctypes.c_int32]),
        ("rd_kafka_mock_broker_set_up", ctypes.c_int, [vp, ctypes.c_int32]),
        ("rd_kafka_mock_topic_delete", ctypes.c_int, [vp, cp]),
    ]:
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


class MockKafka:
    def __init__(self, brokers=3):
        self._lib = lib = _librdkafka()
        conf = lib.rd_kafka_conf_new()
        err = ctypes.create_string_buffer(512)
        for k, v in [("test.mock.num.brokers", str(brokers)), ("log_level", "3")]:
            assert lib.rd_kafka_conf_set(conf, k.encode(), v.encode(), err, 512) == 0, err.value
        self._rk = lib.rd_kafka_new(0, conf, err, 512)  # RD_KAFKA_PRODUCER
        assert self._rk, err.value
        self._mock = lib.rd_kafka_handle_mock_cluster(self._rk)
        assert self._mock
        self.bootstrap = lib.rd_kafka_mock_cluster_bootstraps(self._mock).decode()
        self._anchor = Producer({"bootstrap.servers": self.bootstrap, "log_level": 3})
        md = self._anchor.list_topics(timeout=10)
        self.broker_ids = sorted(md.brokers)
        self.brokers = [f"{md.brokers[b].host}:{md.brokers[b].port}" for b in self.broker_ids]
        assert len(self.brokers) == brokers, md.brokers

    def close(self):
        if self._rk:
            self._anchor = None
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None

    def create_topic(self, topic, partitions):
        assert self._lib.rd_kafka_mock_topic_create(self._mock, topic.encode(), partitions, 1) == 0

    def recreate_topic(self, topic, partitions):
        """Deletes the topic and creates it again (offsets start at 0 again)."""
        assert self._lib.rd_kafka_mock_topic_delete(self._mock, topic.encode()) == 0
        self.create_topic(topic, partitions)

    def set_leader(self, topic, partition, broker_id):
        assert self._lib.rd_kafka_mock_partition_set_leader(self._mock, topic.encode(), partition, broker_id) == 0

    def broker_down(self, broker_id):
        assert self._lib.rd_kafka_mock_broker_set_down(self._mock, broker_id) == 0

    def broker_up(self, broker_id):
        assert self._lib.rd_kafka_mock_broker_set_up(self._mock, broker_id) == 0

    def leaders(self, topic):
        md = self._anchor.list_topics(topic, timeout=10)
        return {p: m.leader for p, m in md.topics[topic].partitions.items()}

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
