"""Events other apps consume. `image_accepted` is sent once per accepted
image, after the transaction that stored it commits (the AI engine queues
its work from it). Arguments: image_id."""

from django.dispatch import Signal

image_accepted = Signal()
