"""Building blocks of the transfer trainers and the trainers themselves (``trainers``)."""
