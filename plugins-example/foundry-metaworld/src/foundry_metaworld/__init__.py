"""Meta-World (MuJoCo, MIT) as a Foundry plugin: MT50 tasks, scripted demonstrations, closed-loop evaluation."""
