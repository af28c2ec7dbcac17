"""Beyond one process: a step's rollout in shards (`shards`), and rollout workers on Ray
(`ray_rollouts`, imported only when a config asks for workers: Ray is an optional dependency)."""
