"""Reinforcement-learning agents shared by the methods: PPO (a Task for the shared loop) and GAE."""
