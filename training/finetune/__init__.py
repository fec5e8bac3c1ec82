"""Fine-tuning of classification, NER and extractive-QA heads: `bert finetune classify|ner|qa ...`."""
