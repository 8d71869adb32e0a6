"""gateagent: the edge daemon at an RFID attendance gate."""

__version__ = "0.1.0"
