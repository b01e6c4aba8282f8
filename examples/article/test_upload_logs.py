"""Batching and payload reading of upload_logs.py (no AWS, no boto3):
python3 -m unittest discover -s examples/article -p 'test_*.py'."""

import json
import os
import tempfile
import unittest

import upload_logs as u


class FakeClient:
    """Records calls; raises ResourceAlreadyExistsException for groups and streams seen before."""

    class exceptions:  # noqa: N801 (boto3's attribute name)
        class ResourceAlreadyExistsException(Exception):
            pass

    def __init__(self):
        self.groups, self.streams, self.puts = set(), set(), []

    def create_log_group(self, logGroupName):  # noqa: N803
        if logGroupName in self.groups:
            raise self.exceptions.ResourceAlreadyExistsException()
        self.groups.add(logGroupName)

    def create_log_stream(self, logGroupName, logStreamName):  # noqa: N803
        if (logGroupName, logStreamName) in self.streams:
            raise self.exceptions.ResourceAlreadyExistsException()
        self.streams.add((logGroupName, logStreamName))

    def put_log_events(self, logGroupName, logStreamName, logEvents):  # noqa: N803
        self.puts.append((logGroupName, logStreamName, logEvents))


class Batches(unittest.TestCase):
    def test_chronological_and_stable_within_a_millisecond(self):
        events = [{"timestamp": 5, "message": "b"}, {"timestamp": 3, "message": "a"}, {"timestamp": 5, "message": "c"}]
        self.assertEqual([[e["message"] for e in b] for b in u.batches(events)], [["a", "b", "c"]])

    def test_at_most_10000_events(self):
        out = u.batches([{"timestamp": i, "message": "x"} for i in range(20_001)])
        self.assertEqual([len(b) for b in out], [10_000, 10_000, 1])

    def test_at_most_a_mebibyte_counting_26_bytes_per_event(self):
        big = "é" * 100_000  # 200,000 bytes in UTF-8
        out = u.batches([{"timestamp": i, "message": big} for i in range(6)])
        for b in out:
            self.assertLessEqual(sum(len(e["message"].encode()) + 26 for e in b), 1_048_576)
        self.assertEqual([len(b) for b in out], [5, 1])

    def test_at_most_24_hours_per_batch(self):
        day = 24 * 3600 * 1000
        out = u.batches([{"timestamp": t, "message": "x"} for t in (0, day, day + 1)])
        self.assertEqual([len(b) for b in out], [2, 1])

    def test_an_event_larger_than_a_batch_is_refused(self):
        with self.assertRaises(ValueError):
            u.batches([{"timestamp": 0, "message": "x" * 1_048_576}])


class Upload(unittest.TestCase):
    def test_reads_a_directory_renames_groups_and_tolerates_existing_ones(self):
        with tempfile.TemporaryDirectory() as d:
            for name, group, stream in (("a.json", "/ecs/express-app", "s1"), ("b.json", "/aws/lambda/f", "s2")):
                with open(os.path.join(d, name), "w", encoding="utf-8") as fh:
                    json.dump({"logGroup": group, "logStream": stream,
                               "logEvents": [{"id": "1", "timestamp": 2, "message": "m2"},
                                             {"id": "2", "timestamp": 1, "message": "m1"}]}, fh)
            with open(os.path.join(d, "notes.txt"), "w", encoding="utf-8") as fh:
                fh.write("ignored")
            payloads = u.read_payloads([d])
        client = FakeClient()
        client.groups.add("/aws/lambda/f")  # exists already
        done = u.upload(client, payloads, u.parse_renames(["/ecs/express-app=/ecs/run-1/express-app"]))
        self.assertEqual(done, [("/ecs/run-1/express-app", "s1", 2, 1), ("/aws/lambda/f", "s2", 2, 1)])
        self.assertEqual([[e["message"] for e in p[2]] for p in client.puts], [["m1", "m2"], ["m1", "m2"]])

    def test_bad_input_is_an_error(self):
        with self.assertRaises(ValueError):
            u.parse_renames(["no-equals"])
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump({"logGroup": "g"}, fh)
        try:
            with self.assertRaises(ValueError):
                u.read_payloads([fh.name])
        finally:
            os.unlink(fh.name)


if __name__ == "__main__":
    unittest.main()
