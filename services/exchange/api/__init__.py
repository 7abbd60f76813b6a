"""The exchange's JSON API (under ``/api``), one module per aggregate: request Structs, thin controllers, response
Structs."""
