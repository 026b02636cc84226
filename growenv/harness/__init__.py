"""Running and comparing policies: episodes (:mod:`~growenv.harness.episodes`), statistics over
seeds (:mod:`~growenv.harness.stats`), static baselines (:mod:`~growenv.harness.baselines`),
benchmark jobs (:mod:`~growenv.harness.bench`), summaries and plots
(:mod:`~growenv.harness.summary`, :mod:`~growenv.harness.plots`) and PPO training
(:mod:`~growenv.harness.ppo_training`)."""
