"""The pipeline: the two lanes (intake, work), the stages of a call, delivery, routing, follow-ups, digest."""
