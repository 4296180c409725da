"""RLV: Reinforcement Learning with Videos (Schmeckpeper, Rybkin, Daniilidis, Levine, Finn; CoRL 2020).

`model`: the inverse model, Eq. 2 reward labels and the domain-adversarial terms as one `sac.Aux` on SAC's shared
encoder; `domain`: the state-based domain shift of the paper's Sec. 3.1 (a fixed random invertible map of states).
"""
