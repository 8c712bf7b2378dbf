"""An independent Courier client on libolm, for interoperability tests with the SDK."""
