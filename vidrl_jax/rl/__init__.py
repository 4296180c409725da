"""Reinforcement-learning agents shared by the methods: PPO (a Task for the shared loop), GAE and DreamerV2's
lambda-returns (`gae`), policy evaluation in JAX-native envs (`evaluate`), SAC (`sac`) and its binding as an online
stage of the shared loop (`offpolicy.sac_task`), RND's exploration bonus as a SAC aux (`rnd`), BCO(0)/BC from
observation (`bco`: AIME's and RLV's baseline) and target networks (`target`: Polyak averaging, DreamerV2's
periodic copy). Networks live in `vidrl_jax.nets` (PPO's actor-critic: `nets.actor_critic`), optimisers in
`vidrl_jax.train.optim`."""
