"""The example resource server: an Orders API protected by Bastion's bearer tokens."""

from bastion.orders.api import create_orders_app

__all__ = ["create_orders_app"]
