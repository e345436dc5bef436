from django.apps import AppConfig, apps


class ReplicatorConfig(AppConfig):
    name = "replicator"
    verbose_name = "Replicated configuration store"

    def ready(self) -> None:
        from replicator.models import ReplicatedModel, register

        for model in apps.get_models():
            if issubclass(model, ReplicatedModel):
                register(model)
