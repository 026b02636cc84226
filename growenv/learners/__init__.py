"""Value-based growth learners: a per-slot shared scorer (:mod:`.scorer`), double DQN and a
contextual bandit (:mod:`.value`), and reward wrappers (:mod:`.wrappers`)."""
