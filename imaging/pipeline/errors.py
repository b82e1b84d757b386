class Rejected(Exception):
    """The file cannot be accepted; `reason` says why, in words a coordinator
    can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
