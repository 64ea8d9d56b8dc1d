"""The three clinicflow services; each is its own process and meets the others only on Kafka."""
