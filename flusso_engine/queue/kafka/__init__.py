"""The Kafka queue (`queue.type: kafka`): its message format is `codec.py`."""
