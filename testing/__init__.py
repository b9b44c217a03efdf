"""The pixsim7 testing kit: real PostgreSQL and Redis, isolated apps, snapshots, faults."""
