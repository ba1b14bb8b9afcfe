"""Focus-region reasoning (VisRL): two-turn trajectories question -> focus box -> crop -> answer.

``boxes``       the FOCUS box convention (0..1 of the original image), parsing, checks, crops
``trajectory``  two-turn rollouts on the public Processor / generate API, per-turn log-prob inputs
``judges``      answer and crop-relevance judges (rule-based, or an OpenAI-compatible endpoint)
``selfgen``     self-evolution preference data (``paddlemix-r1 visrl-generate``), VisRL's filter
``task``        the ``focus_vqa`` task and the trajectory rewards (registered on import)
``online``      GRPO over the same trajectories (``paddlemix-r1 visrl-online``)

Step-level DPO on the preference data lives with the other objectives: ``grpo.dpo`` (the losses) and
``grpo.dpo_train`` (``paddlemix-r1 dpo``). docs/visrl.md describes the whole pipeline.
"""
