"""The service provider (private side): the dialer that keeps each pipe up, the
addresses it dials, and the connector that opens the SC's requests to the
local services."""
