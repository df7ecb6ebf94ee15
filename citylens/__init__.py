"""citylens: what makes a city recognisable to a CNN, and do different networks agree?"""

__version__ = "0.1.0"
