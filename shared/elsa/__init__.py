"""ELSA: Efficient LLM-centric Split Aggregation.

Fine-tune language models across edge networks: the model is cut into a device head, an edge
body and a device tail, trained with LoRA adapters that are aggregated device -> edge -> cloud.
"""

__version__ = "0.1.0"
