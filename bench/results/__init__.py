"""What a results folder holds and how it is read: records, checkpoint leases, example maps,
provenance, and the published reference figures they are compared with. Imports nothing else of
`robustad.bench` and no torch."""
