# The network library (saved custom networks, shared per team) will live here. The
# standard networks are code in models/networks/ and need no table.
