"""The durable journal of every pushed event (docs/ARCHITECTURE.md "Journal")."""
