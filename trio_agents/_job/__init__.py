"""The job: ``JobContext`` and its nursery tree (see ``_context.py``)."""
