"""The Kafka wing of the io layer: consumer, producer, local broker.

With the service and the CLI, the only code that imports kafka-python.
"""
